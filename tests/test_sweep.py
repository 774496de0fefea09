"""The sweep end to end through `python -m bench`: rows, failures as data, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, run_bench


def rows(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results)


def test_default_sweep_writes_measured_rows_and_a_report(tmp_path: Path,
                                                         cache_dir: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    proc = run_bench(*FAST, f"results_dir={results}", f"reports_dir={reports}",
                     "run_id=default-test", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(results)
    ok = df[df.status == "ok"]
    assert len(ok) >= 3, df[["quant", "status", "error"]]
    for col in ("weights_bytes", "peak_host_rss_bytes", "ttft_ms", "decode_tok_s",
                "decode_ms_p50", "load_s", "params"):
        assert (ok[col] > 0).all(), col
    by_quant = ok.set_index("quant")["weights_bytes"]
    assert by_quant["bnb-nf4"] < by_quant["bnb-int8"] < by_quant["fp32"]
    assert (ok.run_id == "default-test").all()
    assert ok.peak_device_bytes.isna().all()  # no GPU: null, never zero
    assert ok.host.notna().all() and ok.torch.notna().all() and ok.config_yaml.notna().all()
    # accuracy of the same loaded model: offline MMLU-format set and real HumanEval (limited)
    assert (ok.eval_set == "offline").all()
    assert (ok.mmlu_acc > 0.6).all(), ok[["quant", "mmlu_acc"]]  # chance is 0.25
    assert (ok.mmlu_n == 96).all() and (ok.humaneval_n == 8).all()
    assert ok.humaneval_pass1.between(0, 1).all() and ok.eval_s.notna().all()
    # the progress display: cell i of n, model, quant, phase, elapsed
    assert "[1/4] tiny-llama · fp32 · local · load ·" in proc.stderr
    assert (reports / "README.md").exists()
    assert "bnb-nf4" in (reports / "README.md").read_text()


def test_failures_are_rows_and_the_sweep_goes_on(tmp_path: Path, cache_dir: Path) -> None:
    """A cell that raises and a cell that times out each leave a row; the others run."""
    results = tmp_path / "results"
    proc = run_bench(*FAST, "quant=fp32", "weights=tiny,real,synthetic",
                     "model.hf_id=/no/such/model",
                     f"results_dir={results}", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(results).set_index("weights")
    assert df.loc["tiny", "status"] == "ok"
    assert df.loc["real", "status"] == "error"
    assert "/no/such/model" in df.loc["real", "error"]
    assert "\n" not in df.loc["real", "error"]
    assert df.loc["real", "error_detail"]  # traceback kept for the curious
    # random weights: memory and speed are real, accuracy is not measured (and says why)
    assert df.loc["synthetic", "status"] == "ok" and df.loc["synthetic", "decode_tok_s"] > 0
    assert pd.isna(df.loc["synthetic", "mmlu_acc"])
    assert "synthetic" in df.loc["synthetic", "eval_note"]

    proc = run_bench(*FAST, "quant=fp32", "cell.timeout_s=1", "eval=none",
                     f"results_dir={results}",
                     "run_id=slow", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    slow = rows(results / "slow").iloc[0]
    assert slow.status == "timeout"
    assert "cell.timeout_s=1" in slow.error


def test_killed_sweep_resumes_only_the_missing_cells(tmp_path: Path, cache_dir: Path) -> None:
    results = tmp_path / "results"
    args = [sys.executable, "-m", "bench", *FAST, "quant=fp32,bf16,bnb-nf4", "eval=none",
            f"results_dir={results}", "run_id=night1", "report=false"]
    env = {**os.environ, "BENCH_CACHE": str(cache_dir)}
    sweep = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir = results / "night1"
    deadline = time.monotonic() + 300
    while not (run_dir.is_dir() and any(run_dir.glob("*.parquet"))):
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGKILL)  # the whole sweep, cell child included
    sweep.wait()
    first = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")}
    assert 1 <= len(first) < 3

    dry = run_bench(*FAST, "quant=fp32,bf16,bnb-nf4", "eval=none", f"results_dir={results}",
                    "run_id=night1", "dry_run=true", cwd=tmp_path, cache=cache_dir)
    assert dry.stdout.count("in this run]") == len(first)

    proc = run_bench(*FAST, "quant=fp32,bf16,bnb-nf4", "eval=none", f"results_dir={results}",
                     "run_id=night1", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("already in this run, skipped") == len(first)
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")}
    assert len(after) == 3
    assert all(after[name] == mtime for name, mtime in first.items())  # not measured again

    proc = run_bench(*FAST, "quant=fp32,bf16,bnb-nf4", "eval=none", f"results_dir={results}",
                     "run_id=night2", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0
    df = rows(results)
    assert sorted(df.groupby("cell_id").size()) == [2, 2, 2]  # history: one row per night


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_hydra_information_flags_still_work(tmp_path: Path, cache_dir: Path,
                                            args: list[str]) -> None:
    proc = run_bench(*args, cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "quant" in proc.stdout
