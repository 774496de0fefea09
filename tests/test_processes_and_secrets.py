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

from tests.conftest import FAST, run_bench


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
    scanned = 0
    for folder in (reports, tmp_path / "outputs", cache_dir / "lm_eval_tasks"):
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert token.encode() not in path.read_bytes(), path
    assert scanned > 10


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
    assert alive == [], [p.cmdline() for p in alive]
