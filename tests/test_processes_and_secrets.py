"""No secret leaks into any output, and no cell outlives a killed sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import FAST, assert_written_nowhere, run_bench


@pytest.mark.slow
def test_a_hub_token_is_written_nowhere(tmp_path: Path, cache_dir: Path,
                                        monkeypatch) -> None:
    """A fake HF_TOKEN, a cell that fails on the hub (its error and traceback are kept) and
    one that works: the token is in no Parquet string, report, log or saved config."""
    token = f"hf_fake{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_TOKEN", token)
    results, reports = tmp_path / "results", tmp_path / "reports"
    proc = run_bench("-m", "model=tiny-llama", "quant=fp32", "eval=none", "weights=tiny,real",
                     "model.hf_id=no-such-org/no-such-repo", *FAST, f"results_dir={results}",
                     f"reports_dir={reports}", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert token not in proc.stdout + proc.stderr
    statuses = []
    for path in results.rglob("*.parquet"):
        for row in pq.read_table(path).to_pylist():
            statuses.append(row["status"])
            for key, value in row.items():
                assert not (isinstance(value, str) and token in value), (path, key)
    assert sorted(statuses) == ["error", "ok"]
    assert assert_written_nowhere([token], [tmp_path, cache_dir / "lm_eval_tasks"]) > 10


@pytest.mark.slow
def test_a_servers_environment_is_written_nowhere(tmp_path: Path, cache_dir: Path) -> None:
    """Values of engine.server_env reach the server's environment and no file: not the row
    (its stored config says ***), not Hydra's saved config and overrides, not the logs."""
    secret = f"s3cr3t{uuid.uuid4().hex}"
    results = tmp_path / "results"
    proc = run_bench("model=tiny-llama", "quant=gguf-q8_0", "eval=none", "engine=llamacpp-server",
                     f"+engine.server_env.BENCH_TEST_SECRET={secret}", *FAST,
                     f"results_dir={results}", f"reports_dir={tmp_path / 'reports'}",
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert secret not in proc.stdout + proc.stderr
    (row,) = [r for p in results.rglob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert row["status"] == "ok", row["error"]
    assert "BENCH_TEST_SECRET: '***'" in row["config_yaml"]
    hydra_files = list((tmp_path / "outputs").rglob(".hydra/*.yaml"))
    assert hydra_files and any("BENCH_TEST_SECRET" in p.read_text() for p in hydra_files)
    assert assert_written_nowhere([secret], [tmp_path, cache_dir / "servers"]) > 10


def test_the_scrubber_takes_every_kind_of_secret(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh")
    monkeypatch.setenv("MY_KEY", "sk-0123456789")
    from bench.core.secrets import args_scrubber, redacted, scrubber, strip_credentials
    from bench.sweep.plan import make_plan

    c = make_plan(["model=tiny-llama", "eval=none", "quant=gguf-q8_0", "engine=openai",
                   "engine.url=http://u:p4ssw0rd@10.0.0.1:8000", "cell.device=cpu"])[0].config
    text = "url http://u:p4ssw0rd@10.0.0.1:8000/v1 token hf_abcdefgh"
    assert scrubber([c]).scrub(text) == "url http://***@10.0.0.1:8000/v1 token ***"
    assert strip_credentials("https://u:p@host:1/x") == "https://host:1/x"
    assert redacted(c).engine.url == "http://10.0.0.1:8000"
    env_args = ["engine.server_env={A: value-one, B: value-two}", "+engine.server_env.C=v3333"]
    cleaned = args_scrubber(env_args).scrub("value-one value-two v3333 hf_abcdefgh")
    assert cleaned == "*** *** *** ***"


def test_a_killed_sweep_takes_its_cell_with_it(tmp_path: Path, cache_dir: Path) -> None:
    """SIGKILL to the sweep alone (not its group) while the cell's child is still importing:
    the child asks the kernel to die with its parent before anything else."""
    env = {**os.environ, "BENCH_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "bench", "model=tiny-llama", "quant=fp32",
                              "eval=none", *FAST, f"results_dir={tmp_path / 'results'}",
                              "report=false"], cwd=tmp_path, env=env,
                             stderr=subprocess.PIPE, text=True)
    assert sweep.stderr is not None
    for line in sweep.stderr:
        if "· start" in line:
            break
    deadline = time.monotonic() + 30
    children: list[psutil.Process] = []
    while not children and time.monotonic() < deadline:
        children = psutil.Process(sweep.pid).children(recursive=True)
        time.sleep(0.05)
    assert children, "no cell process appeared"
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    gone, alive = psutil.wait_procs(children, timeout=5)
    # a zombie has exited (it runs nothing and holds no memory); only its reaper is late
    running = [p for p in alive if _status(p) != psutil.STATUS_ZOMBIE]
    assert running == [], [p.cmdline() for p in running]


def _status(proc: psutil.Process) -> str:
    try:
        return proc.status()
    except psutil.NoSuchProcess:
        return psutil.STATUS_DEAD
