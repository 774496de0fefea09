"""Shared fixtures: one tiny-model cache for the session, and a runner for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
# llama.cpp's own programs take minutes to build: one build serves every test session of this
# machine (as the user's cache would), not one per session's temporary cache
os.environ.setdefault("BENCH_LLAMACPP_TOOLS",
                      str(Path("~/.cache/bench/llama.cpp").expanduser()))


def _share_the_cpus_among_workers() -> None:
    """Under pytest-xdist (`make test` runs two workers) each worker gets its own CPUs: the
    cells it starts inherit the affinity, and torch's and llama.cpp's thread counts are sized
    from it (bench's `cpu_threads`), so two workers never oversubscribe the cores."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT")
    cpus = sorted(os.sched_getaffinity(0))
    if worker and count and 1 < int(count) <= len(cpus):
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw"))::int(count)])


_share_the_cpus_among_workers()

# Small but real workloads keep each cell to a few seconds on 2 cores.
FAST = ["workload.prompt_tokens=16", "workload.new_tokens=8", "workload.warmup_runs=1",
        "workload.warmup_until_steady=false",
        "workload.repeats=3", "workload.min_duration_s=0"]
# Every accuracy path, lightly: the real MMLU's first question in three subjects (letter and
# cloze), two HumanEval problems, quality on 2 x 128 tokens. Full-size scoring is proved
# in-process (tests/test_eval.py, test_mmlu.py, test_stages.py).
LIGHT_SUBJECTS = ("anatomy", "astronomy", "virology")
LIGHT_EVAL = [f"eval.mmlu_subjects=[{','.join(LIGHT_SUBJECTS)}]", "eval.mmlu_limit=1",
              "eval.humaneval_limit=2", "eval.humaneval_max_new_tokens=16",
              "eval.quality_chunks=2", "eval.quality_chunk_tokens=128"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test run: under xdist the workers share it (entries are built
    atomically, so two workers asking for the same model agree on one)."""
    root = tmp_path_factory.getbasetemp()
    path = (root.parent / "bench-cache" if os.environ.get("PYTEST_XDIST_WORKER")
            else tmp_path_factory.mktemp("bench-cache"))
    path.mkdir(exist_ok=True)
    os.environ["BENCH_CACHE"] = str(path)  # in-process tests and child processes alike
    return path


def run_bench(*args: str, cwd: Path, cache: Path, timeout: float = 600,
              module: str = "bench") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def load_on_cpu(cfg: Any, for_eval: bool = False) -> Any:
    """The cell's model through its engine, in this process on the CPU, prepared first as
    the runner does (the GGUF file converted, the checkpoint calibrated)."""
    from bench.engines import load_engine
    from bench.engines.base import Device

    engine = load_engine(cfg.resolved_engine)
    engine.setup(cfg)
    engine.prepare(cfg)
    return engine.load(cfg, Device("cpu"), None, for_eval=for_eval)


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


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """An aiohttp application served on 127.0.0.1 from a thread of its own (a real HTTP
    server for a fake model server's routes); yields its base URL."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)

