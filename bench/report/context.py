"""Table 2, max context per GPU class: from the measured growth of peak memory with context.

Cells of one model × quant × batch measured on one device at two or more context lengths
(prompt + new tokens) give a least-squares line peak = intercept + slope × context. The
slope is checked against the analytic KV cache size from conf/model architecture facts,
and the longest context a class holds is (C − intercept) / slope, capped at the model's
max_position_embeddings. With a single context length the slope is not invented: ❓.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from bench.report.compat import class_header
from bench.report.confdata import ConfData, kv_bytes_per_token
from bench.report.data import (
    Row,
    context_tokens,
    device_peak,
    engine_of,
    is_gpu,
    is_offload,
    is_text,
    model_key,
    newest_first,
)
from bench.report.fmt import MISSING, md_table, num
from bench.report.provenance import Sources
from bench.report.symbols import NO, UNKNOWN

KIB = 1024


@dataclass(frozen=True)
class Fit:
    """peak ≈ intercept + slope × context, from len(points) measured cells."""

    slope: float  # bytes per context token (whole batch)
    intercept: float  # bytes
    contexts: tuple[int, ...]


def least_squares(points: Sequence[tuple[int, int]]) -> Optional[Fit]:
    """Ordinary least squares; None unless at least two distinct context lengths."""
    xs = sorted({x for x, _ in points})
    if len(xs) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return Fit(slope, mean_y - slope * mean_x, tuple(xs))


def max_context(fit: Fit, capacity: int, max_positions: Optional[int]) -> tuple[Optional[int],
                                                                                 str]:
    """Longest context that fits in `capacity`, as (tokens or None, text)."""
    if fit.slope <= 0:
        return None, f"{UNKNOWN} slope ≤ 0"
    tokens = math.floor((capacity - fit.intercept) / fit.slope)
    if tokens < 1:
        return 0, f"{NO} 0"
    if max_positions is not None and tokens >= max_positions:
        return max_positions, f"{max_positions:,} (model max)"
    return tokens, f"{tokens:,}"


@dataclass(frozen=True)
class ContextRow:
    model_row: Row  # a row of the group, for the model/quant/batch fields
    device: str
    rows: tuple[Row, ...]
    fit: Optional[Fit]
    peak_source: str
    analytic: Optional[int]


def _fit_rows(rows: Sequence[Row]) -> tuple[list[Row], str]:
    """The rows one line is fitted through: NVML peaks, or reserved peaks when that is all."""
    nvml = [r for r in rows if device_peak(r)[1] == "nvml"]
    return (nvml, "nvml") if nvml else (list(rows), "reserved")


def _group(row: Row) -> tuple[Any, ...]:
    """Rows one line is fitted through: one model, weights, engine, scheme and batch."""
    return (row.get("model"), row.get("weights"), row.get("engine"), row.get("quant"),
            row.get("batch_size"))


def build(latest: Sequence[Row], conf: ConfData) -> list[ContextRow]:
    """Rows of the tasks that hold a context of tokens (an image pipeline has no KV cache)."""
    latest = [r for r in latest if is_text(r)]
    measured = [r for r in latest if r.get("status") == "ok" and is_gpu(r)
                and not is_offload(r) and device_peak(r)[0] is not None
                and context_tokens(r) is not None]
    by_key: dict[tuple[Any, ...], list[Row]] = {}
    for row in measured:
        key = (*_group(row), str(row.get("device_name")))
        by_key.setdefault(key, []).append(row)
    out = []
    for key, rows in by_key.items():
        used, source = _fit_rows(newest_first(rows))
        points = [(context_tokens(r) or 0, device_peak(r)[0] or 0) for r in used]
        out.append(ContextRow(used[0], key[-1], tuple(used), least_squares(points), source,
                              kv_bytes_per_token(conf, used[0])))
    covered = {k[:-1] for k in by_key}
    rest: dict[tuple[Any, ...], list[Row]] = {}
    for row in latest:
        if _group(row) not in covered:
            rest.setdefault(_group(row), []).append(row)
    for rows in rest.values():
        ordered = newest_first(rows)
        out.append(ContextRow(ordered[0], "", tuple(ordered), None, "",
                              kv_bytes_per_token(conf, ordered[0])))
    return sorted(out, key=lambda c: (model_key(c.model_row)[:5], c.model_row.get("batch_size")
                                      or 0, c.device))


def _per_token(nbytes: Optional[float]) -> str:
    return MISSING if nbytes is None else f"{nbytes / KIB:.1f} KiB/token"


def _contexts(row: ContextRow) -> str:
    found = sorted({c for r in row.rows if (c := context_tokens(r)) is not None})
    return ", ".join(str(c) for c in found) if found else MISSING


def table(rows: Sequence[ContextRow], conf: ConfData, sources: Sources) -> str:
    headers = [class_header(g) for g in conf.gpu_classes]
    columns = ["Model", "Engine", "Quant", "Batch", "Measured on", "Contexts measured (tokens)",
               "Measured slope", "Intercept", "Analytic KV cache", "Measured ÷ analytic",
               *headers, "Model max context", "Source"]
    records = []
    for row in rows:
        arch = conf.models.get(str(row.model_row.get("model")))
        max_pos = arch.max_position_embeddings if arch else None
        fit = row.fit
        record = {"Model": str(row.model_row.get("model")),
                  "Engine": engine_of(row.model_row),
                  "Quant": str(row.model_row.get("quant")),
                  "Batch": str(row.model_row.get("batch_size")),
                  "Measured on": row.device or f"{MISSING} (no GPU-measured peak)",
                  "Contexts measured (tokens)": _contexts(row),
                  "Analytic KV cache": _per_token(row.analytic),
                  "Model max context": f"{max_pos:,}" if max_pos else MISSING,
                  "Source": sources.refs(row.rows)}
        if fit is None:
            why = "1 context length" if row.device else "no device peak"
            record.update({"Measured slope": f"{UNKNOWN} missing ({why})",
                           "Intercept": MISSING, "Measured ÷ analytic": MISSING})
            record.update({h: UNKNOWN for h in headers})
        else:
            dagger = " †" if row.peak_source == "reserved" else ""
            record.update({
                "Measured slope": _per_token(fit.slope) + dagger,
                "Intercept": f"{fit.intercept / 2**30:.2f} GiB{dagger}",
                "Measured ÷ analytic": (num(fit.slope / row.analytic, 2) if row.analytic
                                        else MISSING)})
            record.update({h: max_context(fit, g.capacity_bytes, max_pos)[1]
                           for h, g in zip(headers, conf.gpu_classes, strict=True)})
        records.append(record)
    return md_table(records, columns)


LEGEND = (
    "Text tasks only (LLM and vision-language rows). Context = prompt + generated tokens per "
    "sequence. Measured slope and intercept: "
    "least-squares line through the device peaks (NVML; † = allocator reserved peak) of one "
    "model × quant × batch on one device at ≥ 2 context lengths; bytes per token are for the "
    "whole batch. Analytic KV cache = 2 × layers × KV heads × head dim × dtype bytes × batch "
    "per token (conf/model architecture facts; dtype = the quant's activation dtype in "
    "conf/quant). Measured ÷ analytic > 1 means activations and allocator slack grow with "
    "context too. Per class: longest context = ⌊(C − intercept) / slope⌋ tokens with C = "
    "vram_mib × 2^20, capped at the model's max_position_embeddings; ❌ 0 = even the "
    "intercept exceeds C; ❓ = measured slope missing (a single context length, or no GPU "
    "row): no figure is extrapolated from the analytic size alone. The line is only "
    "measured between the contexts listed; beyond them it is an extrapolation."
)
