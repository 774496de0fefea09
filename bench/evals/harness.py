"""Accuracy on the model the cell already loaded: lm-eval's `LM` of the cell's engine around
the same in-memory (quantized) model (transformers: HFLM; llama.cpp: bench's LlamaCppLM),
no reload, no second quantization.

MMLU: bench's offline MMLU-format group, or lm-eval's `mmlu` group over cais/mmlu
(size-weighted mean of the 57 subjects). HumanEval: bench's sandboxed task over the real
164 problems. Each figure comes back with its stderr and n; a task that cannot run here
(cais/mmlu with no hub and no cache) leaves its columns null with the reason in eval_note.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from bench.config import EvalConfig
from bench.engines.base import LoadedModel
from bench.evals import invented_mmlu, tasks

HUB_MMLU_GROUP = "mmlu"
HUB_MMLU_CLOZE_GROUP = "mmlu_continuation"
HUB_MMLU_DATASET = "cais/mmlu"


@dataclass
class EvalOutcome:
    """Row fields of the accuracy phase (names are result columns)."""

    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _stderr(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) else None  # lm-eval says "N/A"


def _n_samples(results: dict, names: list[str]) -> int:
    samples = results.get("n-samples", {})
    return int(sum(samples[name]["effective"] for name in names if name in samples))


def hub_mmlu_unavailable() -> Optional[str]:
    """Why cais/mmlu cannot be read here, or None when it can (cache or hub)."""
    try:
        from datasets import load_dataset_builder

        load_dataset_builder(HUB_MMLU_DATASET, "abstract_algebra")
    except Exception as exc:  # offline, no cache, no network: say so, don't hang
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"mmlu skipped: {HUB_MMLU_DATASET} is not readable here ({first[:200]})"
    return None


def _leaves(results: dict, name: str) -> list[str]:
    """The leaf tasks under a group of lm-eval's results (the name itself for a task)."""
    children = results.get("group_subtasks", {}).get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in _leaves(results, child)]


def _mmlu_groups(cfg: EvalConfig, task_dir: tasks.TaskDir) -> list[tuple[str, str]]:
    """(group, column prefix) of the MMLU forms to run: letter, and cloze when asked."""
    if cfg.mmlu == "invented":
        return [(invented_mmlu.GROUP, "mmlu")]
    if cfg.mmlu == "hub":
        letter, cloze = HUB_MMLU_GROUP, HUB_MMLU_CLOZE_GROUP
    else:
        assert task_dir.mmlu is not None
        letter, cloze = task_dir.mmlu.letter_group, task_dir.mmlu.cloze_group
    return [(letter, "mmlu"), *([(cloze, "mmlu_cloze")] if cfg.mmlu_cloze else [])]


def _evaluate(lm: Any, task_manager: Any, names: list[str], shots: Optional[int],
              limit: Optional[int], unsafe: bool = False) -> dict:
    from lm_eval import simple_evaluate

    return simple_evaluate(model=lm, tasks=names, num_fewshot=shots, limit=limit,
                           task_manager=task_manager, confirm_run_unsafe_code=unsafe,
                           log_samples=False, random_seed=0, numpy_random_seed=1234,
                           torch_random_seed=1234, fewshot_random_seed=1234)


def run_evals(loaded: LoadedModel, cfg: EvalConfig, cache_dir: str) -> EvalOutcome:
    """Evaluate the loaded model; returns the accuracy columns of its row."""
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    os.environ.setdefault("HF_ALLOW_CODE_EVAL", "0")  # nothing of ours uses `evaluate`
    out = EvalOutcome()
    started = time.perf_counter()
    task_dir = tasks.write_task_dir(cache_dir, cfg)
    manager = TaskManager(include_path=str(task_dir.root), include_defaults=cfg.mmlu == "hub")
    lm = loaded.lm(cfg.batch_size)
    out.fields.update(eval_set=cfg.name, eval_batch_size=cfg.batch_size)

    if cfg.mmlu is not None:
        reason = (hub_mmlu_unavailable() if cfg.mmlu == "hub" else None) or (
            loaded.cannot_score())
        check = loaded.score_check()
        if check:
            out.fields["loglik_check"] = check
        if reason:
            out.notes.append(reason)
        else:
            groups = _mmlu_groups(cfg, task_dir)
            # the offline sample is in the task data; lm-eval's limit is the first N
            limit = None if cfg.mmlu == "offline" else cfg.mmlu_limit
            results = _evaluate(lm, manager, [g for g, _ in groups], cfg.mmlu_shots, limit)
            for group, column in groups:
                metrics = results["results"][group]
                leaves = _leaves(results, group)
                out.fields.update({column + "_acc": float(metrics["acc,none"])})
                if column == "mmlu":
                    out.fields.update(mmlu_stderr=_stderr(metrics.get("acc_stderr,none")),
                                      mmlu_n=_n_samples(results, leaves),
                                      mmlu_shots=cfg.mmlu_shots, mmlu_subjects=len(leaves))
            out.fields["mmlu_source"] = (task_dir.mmlu.source if task_dir.mmlu is not None
                                         else f"{cfg.mmlu}: {groups[0][0]}")

    if cfg.humaneval:
        from bench.evals.sandbox import isolation_available

        tasks.HUMANEVAL_TIMEOUT_S["value"] = cfg.humaneval_timeout_s
        results = _evaluate(lm, manager, [tasks.HUMANEVAL_TASK], None, cfg.humaneval_limit,
                            unsafe=True)
        metrics = results["results"][tasks.HUMANEVAL_TASK]
        out.fields.update(humaneval_pass1=float(metrics["pass@1,none"]),
                          humaneval_stderr=_stderr(metrics.get("pass@1_stderr,none")),
                          humaneval_n=_n_samples(results, [tasks.HUMANEVAL_TASK]),
                          humaneval_isolation=isolation_available())

    out.fields["eval_s"] = time.perf_counter() - started
    if out.notes:
        out.fields["eval_note"] = "; ".join(out.notes)
    return out
