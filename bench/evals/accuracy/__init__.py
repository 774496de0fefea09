"""The accuracy tasks: one module per task, each defining `TASK` (a bench.evals.harness
.AccuracyTask). A new task is one module here and the conf that asks for it (eval.tasks)."""
