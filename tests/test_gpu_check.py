"""`make gpu-check`'s plumbing, here: its dry run plans every cell, and its summary turns rows
and nvidia-smi logs into PASS / FAIL lines (the GPU run itself is README: On a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.report_rows import MIB, write

CELLS = ("a-fp16", "b-sync", "c-24gb", "d-12gb", "e-offload", "f-nf4", "h-pidns", "g-int8")


@pytest.mark.slow
def test_the_dry_run_plans_every_cell_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check", "DRY_RUN=1",
                           f"OUT={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "BENCH_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (out / "cells.log").read_text()
    for name in CELLS:
        assert f"== {name}:" in log, name
    assert log.count("model=llama2-7b weights=synthetic engine=hf") == len(CELLS)
    assert "offload=true" in log and "gpu=rtx3060-12gb" in log
    assert len(list(out.iterdir())) <= 8


def _smi(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def test_the_summary_sets_rows_beside_nvidia_smi(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    weights = 6_738_415_616 * 2
    common = dict(model="llama2-7b", quant="fp16", device_name="NVIDIA H200",
                  device_total_bytes=143_771 * MIB, weights_bytes=weights,
                  gpu_uuid="GPU-0000", device_peak_method="nvml-process")
    a = write(results, run_id="gpucheck", peak_device_bytes=13_900 * MIB,
              decode_tok_s=300.0, **common)
    write(results, run_id="gpucheck-sync", peak_device_bytes=13_900 * MIB,
          decode_tok_s=295.0, **common)
    write(results, run_id="gpucheck", gpu_class="rtx3060-12gb", emulated=True, status="oom",
          failed_phase="load", error="OutOfMemoryError: CUDA out of memory",
          **{k: v for k, v in common.items() if k != "weights_bytes"})
    stamp = a.started_at.strftime("%Y/%m/%d %H:%M:%S")
    _smi(out / "smi_apps.csv", [f"{stamp}.100, 4242, 13896 MiB"])
    _smi(out / "smi_gpu.csv", [f"{stamp}.000, 1 MiB, 0 %, 1980 MHz, 80 W",
                               f"{stamp}.200, 13900 MiB, 99 %, 1980 MHz, 600 W"])
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check_summary.py", str(results),
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "- PASS fp16 weights = 13,476,831,232 B" in text
    assert "- PASS device peak within 16 MiB of nvidia-smi's process figure" in text
    assert "- PASS decode below the HBM roofline" in text  # 4.8 TB/s / 13.5 GB = 356 tok/s
    assert "- PASS events clock / sync clock decode within 0.97-1.05" in text
    assert "- PASS 12 GB class: oom" in text
    assert "- — bnb-int8 on CUDA ok" in text  # did not run: not a pass
    assert "| 13,896 / 13,899 |" in text and "| 356 |" in text
    assert (out / "rows.csv").is_file()
