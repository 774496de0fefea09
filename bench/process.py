"""Child processes: die with the parent, and kill a whole process tree.

Shared by the cell runner (cell children), the cells themselves (conversion and calibration
jobs) and the engines that start programs of their own.
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere),
    so a killed sweep leaves no cell measuring nothing. Call it first, before heavy imports."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def kill_tree(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL a process and every descendant, and reap them."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*parent.children(recursive=True), parent]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout_s)


def child_env() -> dict[str, str]:
    """This process's environment with bench importable (for `python -m bench....` jobs)."""
    import os

    from bench.paths import REPO

    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
