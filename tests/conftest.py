"""Shared fixtures: one tiny-model cache for the session, and a runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Small but real workloads keep each cell to a few seconds on 2 cores.
FAST = ["workload.prompt_tokens=16", "workload.new_tokens=8", "workload.warmup_runs=1",
        "workload.warmup_until_steady=false",
        "workload.repeats=3", "workload.min_duration_s=0"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-cache")
    os.environ["BENCH_CACHE"] = str(path)  # in-process tests and child processes alike
    return path


def run_bench(*args: str, cwd: Path, cache: Path, timeout: float = 600,
              module: str = "bench") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_written_nowhere(secrets: list[str], roots: list[Path]) -> int:
    """No secret in any file under the roots (Parquet rows, reports, Hydra's saved configs,
    cell and server logs): their bytes are searched. Returns how many files were read."""
    scanned = 0
    for root in roots:
        for path in (root.rglob("*") if root.is_dir() else []):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if path.suffix == ".parquet":  # compressed: search the values, not the bytes
                    import pyarrow.parquet as pq

                    data += str(pq.read_table(path).to_pylist()).encode()
                scanned += 1
                for secret in secrets:
                    assert secret.encode() not in data, (path, secret[:6])
    return scanned
