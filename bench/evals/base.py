"""What every accuracy task is made of: the interface it implements, the context it runs
in (the cell's model as lm-eval's LM, the task directory, the eval settings) and the figures
it returns generically (task, metric, value, n, stderr, per-item outcomes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from bench.core.config import EvalConfig
from bench.engines.base import LoadedModel
from bench.evals import lm_eval_dir
from bench.evals.request_counter import EvalProgress


@dataclass(frozen=True)
class Score:
    """One accuracy figure, generically: task, metric, value with its n and stderr, and the
    per-item outcomes (1 = right) in a fixed order with a hash of the items, so two rows'
    outcomes can be paired question by question (the same items) without rerunning."""

    task: str
    metric: str
    value: float
    n: int
    stderr: Optional[float]
    outcomes: Optional[str] = None
    items: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"


@dataclass
class EvalOutcome:
    """Row fields of the accuracy phase (names are result columns)."""

    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)

    def generic_fields(self) -> dict[str, Any]:
        """The scores as the row's generic accuracy columns (maps keyed task/metric)."""
        if not self.scores:
            return {}
        return {"accuracy": {s.key: s.value for s in self.scores},
                "accuracy_n": {s.key: s.n for s in self.scores},
                "accuracy_stderr": {s.key: s.stderr for s in self.scores
                                    if s.stderr is not None},
                "accuracy_outcomes": {s.key: s.outcomes for s in self.scores
                                      if s.outcomes is not None},
                "accuracy_items": {s.key: s.items for s in self.scores
                                   if s.items is not None},
                **_intervals(self.scores)}


def _intervals(scores: list[Score]) -> dict[str, dict[str, float]]:
    """The 95 % Wilson interval of each proportion (accuracy, pass@1) with its count."""
    from bench.core.intervals import wilson

    low, high = {}, {}
    for s in scores:
        if s.n and 0 <= s.value <= 1:
            low[s.key], high[s.key] = wilson(s.value, s.n)
    return {"accuracy_ci_low": low, "accuracy_ci_high": high} if low else {}


def outcomes(results: dict, leaves: list[str], metric: str) -> tuple[str, str]:
    """Per-item outcomes of a task (its leaf tasks sorted, items by doc id) as a string of
    0/1, and a hash of which items they are."""
    import hashlib

    bits, ids = [], []
    for leaf in sorted(leaves):
        for sample in sorted(results.get("samples", {}).get(leaf, []),
                             key=lambda s: int(s["doc_id"])):
            bits.append("1" if float(sample[metric]) > 0 else "0")
            ids.append(f"{leaf}:{sample['doc_id']}:{sample.get('doc_hash', '')}")
    return "".join(bits), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def stderr_of(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) else None  # lm-eval says "N/A"


def n_samples(results: dict, names: list[str]) -> int:
    samples = results.get("n-samples", {})
    return int(sum(samples[name]["effective"] for name in names if name in samples))


@dataclass(frozen=True)
class EvalContext:
    """What an accuracy task runs with: the model's LM, lm-eval's task manager over bench's
    task directory, and the eval settings."""

    lm: Any
    manager: Any
    task_dir: lm_eval_dir.TaskDir
    cfg: EvalConfig
    loaded: LoadedModel
    progress: EvalProgress

    def evaluate(self, names: list[str], shots: Optional[int], limit: Optional[int],
                 unsafe: bool = False) -> dict:
        from lm_eval import simple_evaluate

        return simple_evaluate(model=self.lm, tasks=names, num_fewshot=shots, limit=limit,
                               task_manager=self.manager, confirm_run_unsafe_code=unsafe,
                               log_samples=True, random_seed=0, numpy_random_seed=1234,
                               torch_random_seed=1234, fewshot_random_seed=1234)


class AccuracyTask:
    """One accuracy task: whether the eval settings ask for it, and its run (into the
    outcome's generic scores and its historical columns)."""

    name = ""
    configured_by: Optional[str] = None  # its own eval key, where it has one (eval.mmlu)

    def enabled(self, cfg: EvalConfig) -> bool:
        return self.name in cfg.tasks

    def run(self, ctx: EvalContext, out: "EvalOutcome") -> None:
        raise NotImplementedError
