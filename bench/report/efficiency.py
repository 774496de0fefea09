"""Energy efficiency: tokens per joule beside decode speed, per scheme, from the rows' energy
columns (bench.meters.energy). A row without a counter says why instead of a number."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from bench.report.data import (
    Row,
    engine_of,
    is_text,
    measured_through_speed,
    model_key,
    one_line,
    workload_label,
)
from bench.report.fmt import MISSING, md_table, num
from bench.report.provenance import Sources, device_text

COLUMNS = ["Model", "Engine", "Quant", "Workload", "Decode tok/s", "Tokens/J", "J/token",
           "Prefill J/call", "Decode J/call", "Mean power W", "Idle W", "Method",
           "Measured on", "Source"]


def rows_of(latest: Sequence[Row]) -> list[Row]:
    """Text rows whose speed was measured (their energy, or the reason there is none)."""
    return sorted((r for r in latest if is_text(r) and measured_through_speed(r)),
                  key=model_key)


def table(latest: Sequence[Row], sources: Sources) -> str:
    records = []
    for row in rows_of(latest):
        method = row.get("energy_method") or one_line(row.get("energy_note") or MISSING, 80)
        records.append({
            "Model": str(row.get("model")), "Engine": engine_of(row),
            "Quant": str(row.get("quant")), "Workload": workload_label(row),
            "Decode tok/s": num(row.get("decode_tok_s")),
            "Tokens/J": num(row.get("tokens_per_j"), 2),
            "J/token": num(row.get("j_per_token"), 4),
            "Prefill J/call": num(row.get("energy_prefill_j"), 2),
            "Decode J/call": num(row.get("energy_decode_j"), 2),
            "Mean power W": num(row.get("power_w")), "Idle W": num(row.get("idle_power_w")),
            "Method": method, "Measured on": device_text(row), "Source": sources.ref(row)})
    return md_table(records, COLUMNS) if records else "_(no row has a measured speed yet)_"


def plot(latest: Sequence[Row], out_dir: Path) -> tuple[Optional[Any], Optional[str]]:
    """Tokens per joule against decode tok/s, a point per scheme, per model and device; or
    None and why there is no plot."""
    from bench.report import plots

    points: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for row in rows_of(latest):
        if row.get("tokens_per_j") is not None and row.get("decode_tok_s") is not None:
            label = f"{row.get('quant')} ({engine_of(row)})"
            points[f"{row.get('model')} · {plots.short_device(row)}"].append(
                (label, float(row["decode_tok_s"]), float(row["tokens_per_j"])))
    if not points:
        return None, ("efficiency: no row has an energy counter reading (a GPU's NVML "
                      "counter or the CPU's RAPL counters), so no tokens-per-joule plot")
    with plots.style():
        fig = plots.figure(7, 4.6)
        ax = fig.subplots()
        for series, pts in sorted(points.items()):
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            ax.scatter(xs, ys, label=series)
            for label, x, y in pts:
                ax.annotate(label, (x, y), fontsize=7, textcoords="offset points",
                            xytext=(3, 3))
        ax.set_xlabel("decode tok/s")
        ax.set_ylabel("generated tokens per decode joule")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.suptitle("Energy efficiency against speed (up and right is better)")
        path = plots.save(fig, out_dir / "efficiency.png")
    return plots.Plot(path, "tokens per joule against decode speed, per scheme"), None


LEGEND = (
    "One row per text-task cell (LLM, vision-language) whose speed was measured. Energy "
    "comes from hardware counters read when the timed calls start and end (NVML's "
    "total-energy counter of the GPU measured; "
    "the CPU packages' RAPL counters for a CPU cell), never from sampled power. Idle power "
    "(the counter over one idle second before) is subtracted. Prefill J/call: the energy of "
    "prefill-only calls (one token each), per call; Decode J/call: a whole call's energy "
    "less its prefill's; J/token = decode joules per generated token after the first; "
    "Tokens/J its inverse; Mean power: the counter's rise over the timed calls' wall time. "
    "Method says which counter and what was subtracted, or why there is none (a VM without "
    "powercap counters, a MIG slice)."
)
