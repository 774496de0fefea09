"""A cell ended from outside (a time limit's SIGTERM, a scheduler's) still leaves its row,
and nothing it started outlives it: even a child that ignores SIGTERM, and even when bench
is PID 1 of a PID namespace (which ignores a SIGTERM it has no handler for)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.conftest import FAST
from tests.test_engine_seam import install_engine, plugin_env

INIT = '''
"""A test-only engine whose load never ends and ignores SIGTERM, as does its own child."""
from dataclasses import dataclass

from bench.engines.base import Capabilities, EngineSettings

CAPABILITIES = Capabilities(
    name="stall", quant_methods=("none",), default_for=(), devices=("cpu",),
    weights=("tiny", "synthetic"), token_clock=True, allocator_peaks=False, offload=False,
    compile=False, max_batch_size=1, synthetic_model_types=None, kv_cache_dtype=None,
    distribution="psutil")


@dataclass
class StallSettings(EngineSettings):
    name: str = "stall"
    pids_file: str = ""


SETTINGS = StallSettings


def needs_preparing(cfg) -> bool:
    return False
'''

ENGINE = '''
import os
import signal
import subprocess
import time

from bench.engines.base import Device, Engine
from stall_engine import CAPABILITIES


class StallEngine(Engine):
    capabilities = CAPABILITIES

    def resolve_device(self, requested):
        return Device("cpu")

    def start_device(self, cfg, device):
        raise AssertionError("CPU only")

    def load(self, cfg, device, budget, for_eval):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child it starts
        sleeper = subprocess.Popen(["sleep", "600"])
        with open(cfg.engine.pids_file + ".tmp", "w") as fh:
            fh.write(f"{os.getpid()} {sleeper.pid}")
        os.rename(cfg.engine.pids_file + ".tmp", cfg.engine.pids_file)
        while True:
            time.sleep(1)


ENGINE = StallEngine()
'''


def _start(tmp: Path, cache: Path, prefix: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    site, conf = install_engine(tmp, "stall", INIT, ENGINE, 'pids_file: ""\n')
    pids, results = tmp / "pids", tmp / "results"
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "bench", "model=tiny-llama", "engine=stall",
         "quant=fp32", "eval=none", *FAST, f"engine.pids_file={pids}", "run_id=term",
         f"results_dir={results}", "report=false"],
        cwd=tmp, env=plugin_env(site, conf, cache), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not pids.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the cell never reached its load"
        time.sleep(0.2)
    return proc, pids, results


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _row(results: Path) -> pd.Series:
    (row,) = [r for _, r in pd.read_parquet(results).iterrows()]
    return row


@pytest.mark.slow
def test_a_terminated_cell_leaves_a_row_and_nothing_outlives_it(tmp_path: Path,
                                                               cache_dir: Path) -> None:
    proc, pids, results = _start(tmp_path, cache_dir, [])
    child, sleeper = map(int, pids.read_text().split())
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == -signal.SIGTERM, out[-3000:]  # ended as SIGTERM ends: resumable
    row = _row(results)
    assert row.status == "timeout" and row.terminated_by == "SIGTERM", row.error
    assert row.failed_phase == "load" and "terminated by SIGTERM during load" in row.error
    assert "the same run_id measures it again" in out
    assert _gone(child) and _gone(sleeper)  # both ignored SIGTERM; neither outlived the cell


def _pid_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"],
                          capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _pid_namespaces(), reason="this machine gives no PID namespaces")
def test_as_pid_1_of_a_pid_namespace_a_sigterm_still_leaves_the_row(tmp_path: Path,
                                                                   cache_dir: Path) -> None:
    """`unshare -p -f` makes bench PID 1 of its namespace, where a SIGTERM without a handler
    is ignored (the GPU check's PID-namespace cell): the handler turns it into the row."""
    unshare, _, results = _start(tmp_path, cache_dir, ["unshare", "-p", "-f", "--mount-proc"])
    (bench,) = psutil.Process(unshare.pid).children()  # PID 1 inside, this PID outside
    bench.send_signal(signal.SIGTERM)
    out = unshare.communicate(timeout=120)[0]
    assert unshare.returncode == 128 + signal.SIGTERM, out[-3000:]  # PID 1: exit 143
    row = _row(results)
    assert row.status == "timeout" and row.terminated_by == "SIGTERM", row.error


def test_an_interrupted_cell_is_measured_again_by_its_run_id() -> None:
    """Its timeout row is a stand-in, not a measurement: resuming the run (the nightly after
    a kill) measures it again; a cell that ran out of its own time is not retried unasked."""
    from bench.sweep.plan import make_plan
    from bench.sweep.runner import measure_again

    cfg = make_plan(["model=tiny-llama", "eval=none"])[0].config
    assert measure_again(cfg, {"status": "timeout", "terminated_by": "SIGTERM"})
    assert not measure_again(cfg, {"status": "timeout", "terminated_by": None})
