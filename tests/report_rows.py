"""Result rows for the report tests, written through the real store (bench.results.store.write_row).

A row is a ResultRow with plausible provenance; each test states only what it is about.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bench.core.schema import ResultRow
from bench.report.compat import class_header
from bench.report.confdata import load_conf
from bench.results.store import write_row

MIB = 2**20
# what CUDA can allocate on the cards (torch's total_memory): the classes' own capacities
H100_TOTAL = load_conf().gpu("h100-80gb").capacity_bytes  # type: ignore[union-attr]
A100_40_TOTAL = load_conf().gpu("a100-40gb").capacity_bytes  # type: ignore[union-attr]


def col(name: str) -> str:
    """The report's column header of a conf/gpu class ("rtx4090-24gb (23.6 GiB)")."""
    gpu = load_conf().gpu(name)
    assert gpu is not None, name
    return class_header(gpu)


def cap(name: str) -> int:
    """A conf/gpu class's capacity in bytes."""
    gpu = load_conf().gpu(name)
    assert gpu is not None, name
    return gpu.capacity_bytes
NIGHT0 = dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.timezone.utc)

GPU = dict(device="cuda", device_name="NVIDIA H100 80GB HBM3", device_total_bytes=H100_TOTAL,
           gpu_class="local", emulated=False, driver="570.124.06", cuda="12.8")
CPU = dict(device="cpu", device_name="cpu: AMD EPYC 7B13 x2", device_total_bytes=8 * 2**30,
           gpu_class="local", emulated=False)
QUANT_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "bnb-int8": 8, "bnb-nf4": 4,
              "bnb-nf4-dq": 4, "bnb-fp4": 4}


def cell_id(model: str, quant: str, gpu_class: str, batch: int, prompt: int, new: int,
            extra: str = "") -> str:
    """A readable stand-in for the sweep's hash: one per model/quant/class/workload."""
    return f"{model}_{quant}_{gpu_class}_b{batch}_{prompt}_{new}{extra}"


def make_row(night: int = 0, run_id: str | None = None, cell: str | None = None,
             **fields: Any) -> ResultRow:
    """A row of `night` (run_id defaults to that night's date); fields override the defaults."""
    values: dict[str, Any] = dict(
        status="ok", model="llama2-7b", hf_id="meta-llama/Llama-2-7b-hf", revision="main",
        weights="synthetic", quant="fp16", batch_size=1, prompt_tokens=512, new_tokens=128,
        host="gpu-box", git_sha="0123abcd", python="3.12.3", torch="2.13.0",
        transformers="5.23.0", bitsandbytes="0.49.1", repeats=5, compiled=False, **GPU)
    values.update(fields)
    values.setdefault("bits", QUANT_BITS.get(values["quant"]))
    started = NIGHT0 + dt.timedelta(days=night)
    values.setdefault("started_at", started)
    values.setdefault("finished_at", started + dt.timedelta(minutes=5))
    values["run_id"] = run_id or started.strftime("%Y-%m-%d")
    values["cell_id"] = cell or cell_id(values["model"], values["quant"], values["gpu_class"],
                                        values["batch_size"], values["prompt_tokens"],
                                        values["new_tokens"])
    return ResultRow(**values)


def write(results: Path, night: int = 0, **fields: Any) -> ResultRow:
    row = make_row(night, **fields)
    write_row(row, results)
    return row
