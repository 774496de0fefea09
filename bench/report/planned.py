"""Planned cells: every model × scheme of the conf's published sweeps, and what their lower
bound (bench.tasks.bounds) proves for each GPU class before anything is measured.

A bound that can only err low is a proof where it exceeds a class: "❌ certain" when even it
does not fit, "⚠️ at best" when it is above 90 % of the class (a ✅ needs the peak within
0.90·C, so it cannot come), ❓ otherwise until measured. A measured verdict always wins: a
planned cell with a measured row of the same model and scheme is left to the measured table.
The sweeps are read as plain YAML, as the rest of the report reads conf/ (no Hydra compose),
and each cell's config is built from the same typed dataclasses the plan validates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import yaml

from bench.core.config import (
    ArchFacts,
    BenchConfig,
    EvalConfig,
    GpuConfig,
    ModelConfig,
    QuantConfig,
    WorkloadConfig,
)
from bench.core.errors import BenchInputError, SchemeRefused
from bench.engines import default_engine, settings_classes
from bench.report.confdata import ConfData, GpuClass, known_fields
from bench.report.symbols import NO, TIGHT, UNKNOWN
from bench.tasks import task
from bench.tasks.bounds import Prediction

# the sweeps whose cells the report lists before they are measured (conf/sweep/<name>.yaml)
PLANNED_SWEEPS = ("seeds", "llama2")
CERTAIN = f"{NO} certain"
AT_BEST = f"{TIGHT} at best"
_GB = 1e9


@dataclass(frozen=True)
class PlannedCell:
    """One model × scheme of a sweep, at the sweep's most lenient workload."""

    sweep: str
    model: str
    quant: str
    engine: str
    task: str
    workload: str  # what the bound's KV cache assumed
    bound: Optional[Prediction]
    basis: str  # how the bound was reached, or why there is none

    def symbol(self, gpu: GpuClass) -> str:
        return bound_symbol(self.bound.peak_bytes if self.bound else None, gpu.capacity_bytes)


def bound_symbol(bound: Optional[int], capacity: int) -> str:
    """❌ certain / ⚠️ at best / ❓ from a lower bound (integer arithmetic, as peak_symbol)."""
    if bound is None:
        return UNKNOWN
    if bound > capacity:
        return CERTAIN
    if 10 * bound > 9 * capacity:
        return AT_BEST
    return UNKNOWN


def _yaml(path: Any) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def _listed(value: Any) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()] if value is not None else []


def cell_config(conf: ConfData, model: str, quant: str, workload: WorkloadConfig,
                 weights: Optional[str]) -> Optional[BenchConfig]:
    """The cell's typed config from conf/ (None: its model or scheme has no conf file, or no
    engine runs it)."""
    mdata = _yaml(conf.conf_dir / "model" / f"{model}.yaml")
    qdata = _yaml(conf.conf_dir / "quant" / f"{quant}.yaml")
    if not mdata or not qdata:
        return None
    arch = ArchFacts(**known_fields(ArchFacts, mdata.get("arch") or {}))
    plain = {k: v for k, v in known_fields(ModelConfig, mdata).items()
             if k not in ("arch", "tiny", "package")}  # nested: what a bound reads is arch
    model_cfg = ModelConfig(**plain, arch=arch)
    quant_cfg = QuantConfig(**known_fields(QuantConfig, qdata))
    kind = task(model_cfg.task)
    try:
        engine = default_engine(quant_cfg.method, kind.engine_tasks, quant, model_cfg.task)
    except SchemeRefused:
        return None
    return BenchConfig(model=model_cfg, quant=quant_cfg, gpu=GpuConfig(name="local"),
                       eval=EvalConfig(), workload=workload,
                       engine=settings_classes()[engine](), weights=weights)


def _workload(data: dict[str, Any], params: dict[str, Any]) -> WorkloadConfig:
    """The sweep's workload; of the contexts it sweeps, the smallest (a ❌ there is one at
    every larger context)."""
    fields = known_fields(WorkloadConfig, data.get("workload") or {})
    for key, value in params.items():
        if key.startswith("workload."):
            fields[key.split(".", 1)[1]] = min(int(v) for v in _listed(value))
    return WorkloadConfig(**fields)


def planned_cells(conf: ConfData) -> list[PlannedCell]:
    """Every model × scheme of PLANNED_SWEEPS (each pair once, first sweep first)."""
    out: list[PlannedCell] = []
    seen: set[tuple[str, str]] = set()
    for sweep in PLANNED_SWEEPS:
        data = _yaml(conf.conf_dir / "sweep" / f"{sweep}.yaml")
        params = ((data.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
        workload = _workload(data, params)
        for model in _listed(params.get("model")):
            for quant in _listed(params.get("quant")):
                if (model, quant) in seen:
                    continue
                seen.add((model, quant))
                cell = _planned(conf, sweep, model, quant, workload, data.get("weights"))
                if cell is not None:
                    out.append(cell)
    return out


def _planned(conf: ConfData, sweep: str, model: str, quant: str, workload: WorkloadConfig,
             weights: Optional[str]) -> Optional[PlannedCell]:
    cfg = cell_config(conf, model, quant, workload, weights)
    if cfg is None:
        return None
    kind = task(cfg.model.task)
    try:
        kind.check(cfg)  # a workload the model cannot take has no cell to plan
    except BenchInputError:
        return None
    bound = kind.lower_bound(cfg)
    basis = bound.basis(cfg) if bound is not None else "no lower bound for this cell"
    return PlannedCell(sweep, model, quant, cfg.resolved_engine, cfg.model.task,
                       kind.describe_workload(cfg), bound, basis)


def unmeasured(cells: Sequence[PlannedCell], measured: set[tuple[str, str]]
               ) -> list[PlannedCell]:
    """The planned cells no measured row speaks for (model, scheme)."""
    return [c for c in cells if (c.model, c.quant) not in measured]


def bound_gb(cell: PlannedCell) -> str:
    return f"≥ {cell.bound.peak_bytes / _GB:.2f} GB" if cell.bound else UNKNOWN


def table(cells: Sequence[PlannedCell], conf: ConfData) -> str:
    """The planned cells, grouped as the measured table is (LLM, multimodal, diffusion)."""
    from bench.report.compat import class_header
    from bench.report.data import FAMILIES, family_of
    from bench.report.fmt import md_table, section

    columns = ["Model", "Engine", "Quant", "Workload", "Lower bound",
               *(class_header(g) for g in conf.gpu_classes), "Sweep", "Basis"]
    parts = []
    for family in FAMILIES:
        members = [c for c in cells if family_of(c.task) is family]
        if not members:
            continue
        records = [{"Model": c.model, "Engine": c.engine, "Quant": c.quant,
                    "Workload": c.workload, "Lower bound": bound_gb(c),
                    **{class_header(g): c.symbol(g) for g in conf.gpu_classes},
                    "Sweep": f"+sweep={c.sweep}", "Basis": c.basis} for c in members]
        parts.append(section(family.title, md_table(records, columns), level=3))
    return "\n".join(parts)


LEGEND = (
    "Planned cells: every model × scheme of +sweep=" + ", +sweep=".join(PLANNED_SWEEPS)
    + " that no row has measured yet, at the sweep's smallest workload. Lower bound: what the "
    "cell must hold at least, from conf/model's architecture facts alone — the weights at "
    "the scheme's nominal bits (embeddings and the output head at their dtype unless the "
    "scheme quantizes them, a tied pair once; a pipeline's components, all at the scheme's "
    "bits when it quantizes any) plus the KV cache of batch × (prompt + new − 1) tokens, "
    "less what the engine keeps in host memory (llama.cpp's token embeddings). Quantization "
    "scales, activations, the CUDA context and the allocator come on top, so the bound only "
    "errs low. It assumes no offload (a cell whose settings may keep layers in host RAM gets "
    "none) and no swap or driver fallback to system memory. "
    f"{CERTAIN}: the bound exceeds the class's capacity, so the cell cannot fit; {AT_BEST}: "
    f"it exceeds 90 % of it, so ✅ (peak within 0.90·C) is impossible; {UNKNOWN}: not "
    "decided until measured. In decimal GB. A measured row replaces its planned cell."
)
