"""Accuracy on the model the cell already loaded: lm-eval's `LM` of the cell's engine around
the same in-memory (quantized) model (transformers: HFLM; llama.cpp: bench's LlamaCppLM),
no reload, no second quantization.

The accuracy tasks are a registry (bench.evals.accuracy: one module per task, each with its
`TASK`): MMLU (bench's offline group, or lm-eval's over cais/mmlu) and HumanEval (bench's
sandboxed task over the real 164 problems) today. Each figure comes back generically (task,
metric, value, n, stderr, per-item outcomes) beside the task's historical columns; a task
that cannot run here (cais/mmlu with no hub and no cache) says why in eval_note.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

from bench.core.config import EvalConfig
from bench.engines.base import LoadedModel
from bench.evals import lm_eval_dir
from bench.evals.base import EvalContext, EvalOutcome
from bench.evals.registry import accuracy_tasks
from bench.evals.request_counter import EvalProgress, ProgressSink


def _custom_dataset_hint(record: logging.LogRecord) -> bool:
    """Drops lm-eval's hint, logged once per task read through a custom_dataset hook (all of
    bench's: bench.evals.lm_eval_dir.jsonl_dataset), that it can take kwargs from --metadata."""
    return "Custom kwargs can be passed" not in record.getMessage()


def run_evals(loaded: LoadedModel, cfg: EvalConfig, cache_dir: str,
              on_progress: Optional[ProgressSink] = None) -> EvalOutcome:
    """Evaluate the loaded model with every accuracy task the settings ask for; returns the
    accuracy columns of its row. `on_progress` hears how far each task is."""
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval.api.task").addFilter(_custom_dataset_hint)
    os.environ.setdefault("HF_ALLOW_CODE_EVAL", "0")  # nothing of ours uses `evaluate`
    out = EvalOutcome()
    started = time.perf_counter()
    from bench.evals.data_tasks import DataTask

    task_dir = lm_eval_dir.write_task_dir(cache_dir, cfg)
    enabled = [t for t in accuracy_tasks().values() if t.enabled(cfg)]
    data = [t for t in enabled if isinstance(t, DataTask)]
    manager = TaskManager(
        include_path=[str(task_dir.root), *(str(t.include_dir(cache_dir)) for t in data
                                            if t.config is not None)],
        include_defaults=cfg.mmlu == "hub" or any(t.lm_eval for t in data))
    lm, progress = loaded.lm(cfg.batch_size), EvalProgress(on_progress)
    if hasattr(lm, "set_cache_hook"):
        lm.set_cache_hook(progress)
    ctx = EvalContext(lm, manager, task_dir, cfg, loaded, progress)
    out.fields.update(eval_set=cfg.name, eval_batch_size=cfg.batch_size)
    for task in enabled:
        task.run(ctx, out)
    out.fields.update(out.generic_fields())
    out.fields["eval_s"] = time.perf_counter() - started
    if out.notes:
        out.fields["eval_note"] = "; ".join(out.notes)
    return out
