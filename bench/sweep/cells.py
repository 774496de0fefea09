"""A planned cell: its validated configuration, the overrides that made it, its identity
(bench.results.identity) and its line in a dry run."""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.config import BenchConfig
from bench.results.identity import cell_id
from bench.tasks import task_of


@dataclass(frozen=True)
class Cell:
    """One model x quant x gpu x workload x eval combination, validated."""

    config: BenchConfig
    overrides: tuple[str, ...]

    @property
    def cell_id(self) -> str:
        return cell_id(self.config)

    def describe(self) -> str:
        c = self.config
        w = c.workload
        settings = c.engine.describe()
        return (f"{self.cell_id}  model={c.model.name} weights={c.resolved_weights} "
                f"engine={c.resolved_engine} {f'{settings} ' if settings else ''}"
                f"quant={c.quant.name} gpu={c.gpu.name} eval={c.eval.name} "
                f"{'offload=true ' if c.offload else ''}"
                f"batch={w.batch_size} {task_of(c).describe_workload(c)}"
                f"{f' clients={w.concurrency}' if w.concurrency > 1 else ''}")
