"""The compatibility symbols (docs/design.md), derived from measured peaks and OOMs only.

For a class with usable VRAM C and a measured device peak P:
✅ P + U <= 0.90 C (U: how much higher the true peak may have been than measured) ·
⚠️ otherwise while P <= C, or fits only with offload · ❌ P > C, or an OOM on a device of
capacity X >= C (the OOM proves P > X >= C) · ❓ not measured (CPU rows, errors, and
classes larger than the capacity an OOM happened at). C is what CUDA can allocate on such a
card (conf/gpu), not nvidia-smi's total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from bench.report.confdata import ConfData, GpuClass, match_device
from bench.report.data import (
    Row,
    device_peak,
    is_gpu,
    is_offload,
    is_partial,
    measured_through_speed,
    newest_first,
    peak_unseen,
)

OK, TIGHT, NO, UNKNOWN = "✅", "⚠️", "❌", "❓"
PARTIAL = "*"  # after a symbol: memory and speed measured, a later phase did not finish

LEGEND = (
    "Symbols, per GPU class with usable VRAM C (`vram_mib` × 2^20 bytes, conf/gpu/: what "
    "CUDA can allocate on such a card, PyTorch's \"total capacity\", below nvidia-smi's "
    "total) and the measured device peak P of the cell at the stated workload: "
    "✅ P + U ≤ 0.90·C, U being how much higher the true peak may have been than NVML's "
    "10 ms samples saw (`peak_device_unseen_bytes`: the context plus the allocator's exact "
    "peak, less P) · ⚠️ otherwise while P ≤ C (a margin smaller than the measurement's "
    "own uncertainty is ⚠️, not ✅), or fits only with CPU offload (`offload`, shown "
    "only for a class an offload run was measured under: its budget is that capacity) · "
    "❌ P > C, or the cell ran out of memory (❌ oom) on a device whose capacity X ≥ C "
    "(X = the class cap when emulated, else what CUDA can allocate on the device; an OOM at X "
    "P > X) · ❓ not measured: CPU-only rows (no device peak), errors, skipped cells, and "
    "classes larger than the capacity an OOM happened at, and classes no offload run was "
    "measured under. P is NVML's per-process peak "
    "(CUDA context included; in a container, the device's rise since the cell started, when "
    "no other process was on the GPU: `device_peak_method`); † marks rows where NVML was "
    "unavailable and the CUDA allocator's reserved peak (which misses the context) stands "
    "in, a lower bound only (⚠️ at best); for vLLM, which reserves its KV cache up front, "
    "P is what the model needs: its peak less the KV cache reserved beyond the workload's "
    "sequences (the reservation is shown beside it). An OOM on a capped device overrides a "
    "smaller peak measured elsewhere. "
    f"{PARTIAL} after a symbol: the peak and speed were measured, a later phase (quality, "
    "accuracy) did not finish (Status says which and why)."
)


def peak_symbol(peak: int, capacity: int, unseen: Optional[int] = 0) -> str:
    """✅/⚠️/❌ from a measured peak; integer arithmetic so 0.90·C is exact at the boundary.
    `unseen`: how much higher the true peak may have been than measured (None: no upper
    bound is known, so ✅ is not earned): a ✅ needs the peak plus it within 0.90·C."""
    if unseen is not None and 10 * (peak + unseen) <= 9 * capacity:
        return OK
    return TIGHT if peak <= capacity else NO


def oom_capacity(row: Row, conf: ConfData) -> Optional[int]:
    """The device capacity a GPU OOM happened at: the class cap if emulated, else the device's.
    An OOM in accuracy or quality (their own batches) after the workload's memory and speed
    were measured is not the workload's."""
    if row.get("status") != "oom" or not is_gpu(row) or is_partial(row):
        return None
    if row.get("emulated"):
        gpu = conf.gpu(row.get("gpu_class"))
        return gpu.capacity_bytes if gpu else None
    total = row.get("device_total_bytes")
    return int(total) if total is not None else None


@dataclass(frozen=True)
class Evidence:
    """What a group of rows (one model × quant × workload) proves about its device peak."""

    peak_row: Optional[Row]  # the ok GPU row whose peak is used (no offload)
    peak: Optional[int]
    peak_source: str  # "nvml" | "need" | "reserved" | ""
    oom_caps: tuple[int, ...]  # capacities that ran out of memory without offload
    offload_peak: Optional[int]
    # GPU classes an offload run was measured under (its budget is that class's capacity):
    # it fit there, or ran out of memory there. Nothing is said of any other class.
    offload_fits: frozenset[str] = frozenset()
    offload_ooms: frozenset[str] = frozenset()
    # how much higher the true peak may have been (bench.report.data.peak_unseen)
    peak_unseen: Optional[int] = 0


def measured_class(row: Row, conf: ConfData) -> Optional[str]:
    """The GPU class whose capacity a row ran under: the class its allocator was capped to,
    or the class the physical device is (by name), else None."""
    if row.get("emulated"):
        return str(row.get("gpu_class"))
    gpu = match_device(conf, row.get("device_name"))
    return gpu.name if gpu is not None else None


def evidence(group: Iterable[Row], conf: ConfData) -> Evidence:
    rows = newest_first(group)  # when several rows measured it, the newest wins
    peaked = [r for r in rows if measured_through_speed(r) and is_gpu(r)
              and device_peak(r)[0] is not None]
    plain = [r for r in peaked if not is_offload(r)]
    offload = [r for r in peaked if is_offload(r)]
    # NVML (or a need from it) before reserved, a finished row before a partial one, an
    # uncapped device before an emulated one; stable, so newest.
    nvml_first = sorted(plain, key=lambda r: (device_peak(r)[1] == "reserved", is_partial(r),
                                              bool(r.get("emulated"))))
    peak_row = nvml_first[0] if nvml_first else None
    peak, source = device_peak(peak_row) if peak_row else (None, "")

    def classes(found: Iterable[Row]) -> frozenset[str]:
        return frozenset(c for r in found if (c := measured_class(r, conf)) is not None)

    oom_offload = [r for r in rows if is_offload(r) and oom_capacity(r, conf) is not None]
    caps = (oom_capacity(r, conf) for r in rows if not is_offload(r))
    return Evidence(peak_row, peak, source, tuple(sorted(c for c in caps if c is not None)),
                    min((device_peak(r)[0] for r in offload), default=None),
                    classes(offload), classes(oom_offload),
                    peak_unseen(peak_row, source) if peak_row is not None else 0)


def verdict(ev: Evidence, gpu: GpuClass) -> str:
    """The symbol (with a one-word reason where it is not from the peak) for one class.
    An offload symbol only where an offload run was measured under this very class."""
    capacity = gpu.capacity_bytes
    symbol: Optional[str] = (peak_symbol(ev.peak, capacity, ev.peak_unseen)
                             if ev.peak is not None else None)
    if symbol is not None and ev.peak_row is not None and is_partial(ev.peak_row):
        symbol += PARTIAL
    if any(cap >= capacity for cap in ev.oom_caps):
        symbol = f"{NO} oom"
    if symbol is None or symbol.startswith(NO):
        if gpu.name in ev.offload_fits:
            return f"{TIGHT} offload"
        if symbol is None and gpu.name in ev.offload_ooms:
            return f"{NO} offload"
    return symbol if symbol is not None else UNKNOWN
