"""`make gpu-check`'s plumbing, here: its dry run plans every cell with an estimate that fits
one call (and fails when a cell does not plan), and its summary's checks pass on rows shaped
as real rows are and fail on wrong ones (the GPU run itself is docs/gpu.md's)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks import gpu_check
from tests.conftest import FAST, REPO, run_bench
from tests.report_rows import MIB, cap, write

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check_summary as summary  # noqa: E402

LLAMA2_7B = 6_738_415_616  # the published parameter count
ROTARY = 2 * (128 // 2) * 4  # inv_freq and original_inv_freq, float32, head_dim 128


def test_the_dry_run_plans_every_cell_within_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check", "DRY_RUN=1",
                           f"OUT={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "BENCH_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (out / "cells.log").read_text()
    for cell in gpu_check.CELLS:
        assert f"== {cell.name}:" in log, cell.name
    assert log.count("model=llama2-7b weights=synthetic engine=hf") == 8
    assert log.count("model=sd-1.5 weights=synthetic engine=diffusion") == 2
    assert "NOT PLANNED" not in log and log.count("estimated ") == len(gpu_check.CELLS) + 1
    total = sum(inv.estimate_s() for inv in gpu_check.INVOCATIONS)
    assert total <= 8 * 60 and f"estimated {total:.0f} s" in log
    assert len(list(out.iterdir())) <= 8
    # the unique evidence first: the fp16 cell, then the emulated OOM; offload last
    assert [c.name for c in gpu_check.CELLS][:2] == ["a-fp16", "d-12gb"]
    assert gpu_check.CELLS[-1].name == "e-offload"


def test_a_cell_that_does_not_plan_or_a_budget_too_small_fails_the_dry_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dataclasses.replace(gpu_check.INVOCATIONS[2],
                                 args=(*gpu_check.INVOCATIONS[2].args, "quant=bogus"))
    monkeypatch.setattr(gpu_check, "INVOCATIONS", (gpu_check.INVOCATIONS[0], broken))
    check = gpu_check.Check(tmp_path, tmp_path / "work", gpu_check.LIMIT_S)
    assert gpu_check.dry_run(check) == 1
    assert "FAILED to plan bnb" in (tmp_path / "cells.log").read_text()
    monkeypatch.setattr(gpu_check, "INVOCATIONS", gpu_check.INVOCATIONS[:1])
    assert gpu_check.dry_run(check) == 0
    assert gpu_check.dry_run(dataclasses.replace(check, limit_s=30)) == 1


def _smi(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _rows(results: Path, **a_changes: Any) -> Any:
    """The check's rows as real rows are: weights with the rotary buffers, a context
    measured after the first matmuls, CUDA's total as the device's."""
    h100 = cap("h100-80gb")
    common = dict(model="llama2-7b", quant="fp16", device_name="NVIDIA H100 80GB HBM3",
                  device_total_bytes=h100 + 5 * MIB, weights_bytes=LLAMA2_7B * 2 + ROTARY,
                  gpu_uuid="GPU-0000", device_peak_method="nvml-process",
                  context_bytes=520 * MIB, peak_device_unseen_bytes=0,
                  peak_alloc_bytes=13_000 * MIB, peak_reserved_bytes=13_300 * MIB,
                  gpu_peak_bandwidth_gbs=3352.3, offload=False)
    a = write(results, run_id="gpucheck", **{**common, "peak_device_bytes": 13_900 * MIB,
                                             "decode_tok_s": 40.0, **a_changes})
    write(results, run_id="gpucheck-sync", peak_device_bytes=13_900 * MIB,
          decode_tok_s=39.0, **common)
    write(results, run_id="gpucheck", gpu_class="rtx3060-12gb", emulated=True, status="oom",
          failed_phase="load", error="OutOfMemoryError: CUDA out of memory",
          **{k: v for k, v in common.items() if k != "weights_bytes"})
    c24 = cap("rtx4090-24gb")
    write(results, run_id="gpucheck", gpu_class="rtx4090-24gb", emulated=True,
          peak_device_bytes=13_900 * MIB, decode_tok_s=40.0,
          **{**common, "allocator_cap_bytes": c24 - 520 * MIB})
    return a


def _written(tmp_path: Path, **a_changes: Any) -> tuple[Path, Path]:
    """The rows and the two nvidia-smi logs of a check, as the GPU run leaves them."""
    results, out = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    a = _rows(results, **a_changes)
    stamp = a.started_at.strftime("%Y/%m/%d %H:%M:%S")
    _smi(out / "smi_apps.csv", [f"{stamp}.100, 4242, 13896 MiB"])
    _smi(out / "smi_gpu.csv", [f"{stamp}.000, 1 MiB, 0 %, 1980 MHz, 80 W",
                               f"{stamp}.200, 13900 MiB, 99 %, 1980 MHz, 600 W"])
    return results, out


def _summary(tmp_path: Path) -> str:
    results, out = _written(tmp_path)
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check_summary.py", str(results),
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "rows.csv").is_file()
    return proc.stdout


def test_the_summary_passes_rows_shaped_as_real_rows(tmp_path: Path) -> None:
    text = _summary(tmp_path)
    for claim in ("fp16 weights = the meta-built architecture's 6,738,415,616 parameters",
                  "capacity is its CUDA total", "within 16 MiB of nvidia-smi's",
                  "peak_device_unseen_bytes = 0", "measured after the first matmuls",
                  "decode below the HBM roofline", "NVML's peak bandwidth",
                  "on its own card the fp16 cell is ✅", "events clock / sync clock",
                  "24 GB class: ok, allocator capped", "12 GB class: oom, and the table",
                  "NVML found the device"):
        line = next(ln for ln in text.splitlines() if claim in ln)
        assert line.startswith("- PASS"), line
    assert "- — bnb-int8 on CUDA ok" in text  # did not run: not a pass
    assert "| 13,900 (nvml-process, 0) | 13,896 / 13,899 |" in text
    assert "**Stack proved.**" in text and "| torch | " in text and ">=2.13,<2.14" in text


@pytest.mark.parametrize("wrong, claim", [
    ({"weights_bytes": LLAMA2_7B * 2}, "fp16 weights"),  # the buffers left out
    ({"weights_bytes": LLAMA2_7B * 2 + ROTARY + 2}, "fp16 weights"),
    ({"device_total_bytes": cap("h100-80gb") - MIB}, "capacity is its CUDA total"),
    ({"peak_device_unseen_bytes": 64 * MIB}, "peak_device_unseen_bytes = 0"),
    ({"context_bytes": 40 * MIB}, "measured after the first matmuls"),
    ({"decode_tok_s": 300.0}, "decode below the HBM roofline"),  # 3.35 TB/s / 13.5 GB = 249
    ({"gpu_peak_bandwidth_gbs": 2039.0}, "NVML's peak bandwidth"),
    ({"decode_tok_s": 45.0}, "events clock / sync clock"),
    ({"peak_device_bytes": 13_990 * MIB}, "within 16 MiB of nvidia-smi's"),
])
def test_the_summary_fails_wrong_rows(tmp_path: Path, wrong: dict, claim: str) -> None:
    from bench.report.confdata import load_conf
    from bench.report.data import load_rows

    results, out = _written(tmp_path, **wrong)
    apps = summary._smi(out / "smi_apps.csv", ["timestamp", "pid", "used_mib"])
    found = summary.find(load_rows(results), apps)
    (result,) = [ok for what, ok in summary.checks(found, load_conf()) if claim in what]
    assert result is False


@pytest.mark.slow
def test_the_weights_check_passes_a_real_row_and_fails_a_wrong_one(tmp_path: Path,
                                                                   cache_dir: Path) -> None:
    """A real synthetic fp16 cell of a Llama (here on the CPU) sums its parameters and its
    rotary buffers: the check the GPU run makes of Llama-2-7B passes it, and fails the same
    row counting parameters alone."""
    from bench.report.confdata import load_conf

    results = tmp_path / "results"
    proc = run_bench("model=tiny-llama", "weights=synthetic", "quant=fp16", "eval=none",
                     *FAST, f"results_dir={results}", "report=false", cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_parquet(results).iloc[0].to_dict()
    conf = load_conf()
    assert row["status"] == "ok" and summary.weights_check(row, conf) is True
    params = conf.models["tiny-llama"].params
    assert summary.weights_check({**row, "weights_bytes": params * 2}, conf) is False
    assert summary.expected_weights(conf.models["llama2-7b"], "float16") == (
        LLAMA2_7B, LLAMA2_7B * 2 + ROTARY)
