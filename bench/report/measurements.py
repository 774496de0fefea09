"""Every newest row, flat: the raw measurements behind the other tables, failures included."""

from __future__ import annotations

from typing import Sequence

from bench.report.data import (
    BUSY_CORES,
    Row,
    busy_note,
    device_peak,
    engine_of,
    foreign_cores,
    is_gpu,
    model_key,
    one_line,
    workload_label,
)
from bench.report.fmt import MISSING, md_table, num, seconds, size
from bench.report.provenance import Sources, device_text

COLUMNS = ("Model", "Weights", "Engine", "Quant", "GPU class", "Workload", "Status", "Measured on",
           "Weights memory", "Peak device", "Peak allocated", "Peak reserved", "Peak host RAM",
           "Load s", "TTFT ms", "Decode tok/s", "s/image (video: /frame)", "s/step",
           "Conditions", "p50 ms/tok", "p90 ms/tok",
           "Eval set", "MMLU", "HumanEval", "Host", "Run", "Source")


def _status(row: Row) -> str:
    status = str(row.get("status"))
    return f"{status}: {one_line(row['error'], 120)}" if row.get("error") else status


def _peak(row: Row) -> str:
    if not is_gpu(row):
        return MISSING
    value, source = device_peak(row)
    return size(value) + (" †" if source == "reserved" else "")


def _conditions(row: Row) -> str:
    """How busy the machine was while the row was timed."""
    if (note := busy_note(row)) is not None:
        return note
    cores = foreign_cores(row)
    if cores is None:
        return MISSING
    load = f", load {row['load_avg']:.1f}" if row.get("load_avg") is not None else ""
    return f"quiet: other processes {cores:.2f} cores{load}"


def table(latest: Sequence[Row], sources: Sources) -> str:
    records = []
    for row in sorted(latest, key=lambda r: (model_key(r), str(r.get("gpu_class")),
                                             str(r.get("host")))):
        records.append({
            "Model": str(row.get("model")), "Weights": str(row.get("weights")),
            "Engine": engine_of(row), "Quant": str(row.get("quant")),
            "GPU class": str(row.get("gpu_class")),
            "Workload": workload_label(row), "Status": _status(row),
            "Measured on": device_text(row), "Weights memory": size(row.get("weights_bytes")),
            "Peak device": _peak(row), "Peak allocated": size(row.get("peak_alloc_bytes")),
            "Peak reserved": size(row.get("peak_reserved_bytes")),
            "Peak host RAM": size(row.get("peak_host_rss_bytes")),
            "Load s": num(row.get("load_s"), 2), "TTFT ms": num(row.get("ttft_ms")),
            "Decode tok/s": num(row.get("decode_tok_s")),
            "s/image (video: /frame)": seconds(row.get("image_s")),
            "s/step": seconds(row["step_ms"] / 1000) if row.get("step_ms") is not None
            else MISSING, "Conditions": _conditions(row),
            "p50 ms/tok": num(row.get("decode_ms_p50"), 2),
            "p90 ms/tok": num(row.get("decode_ms_p90"), 2),
            "Eval set": str(row.get("eval_set") or MISSING),
            "MMLU": num(row.get("mmlu_acc"), 4), "HumanEval": num(row.get("humaneval_pass1"), 4),
            "Host": str(row.get("host")), "Run": str(row.get("run_id")),
            "Source": sources.ref(row)})
    return md_table(records, COLUMNS)


LEGEND = (
    "The newest row of every cell on every host, whatever its status (ok, oom, error, "
    "timeout, skipped with its reason). Memory in binary units; Peak device = NVML "
    "per-process peak on a GPU (†: allocator reserved peak, NVML unavailable), — on a CPU; "
    "speeds are medians over the timed repeats (image tasks: seconds per image, per frame of "
    "a video, and per denoising step); Conditions: the cores other processes used on "
    "average while the row was timed (/proc/stat minus the cell's own CPU time) and the "
    "1-minute load average, busy above " + f"{BUSY_CORES}" + " cores, and other processes on "
    "the GPU (at the cell's start or while it was timed); — = not measured."
)
