"""The accuracy tasks with code of their own: one module per task, each defining `TASK` (a
bench.evals.base.AccuracyTask): MMLU (bench's offline group, the hub's) and HumanEval (its
sandbox). A task lm-eval can run as it is needs no code: one file in conf/accuracy/
(bench.evals.data_tasks)."""
