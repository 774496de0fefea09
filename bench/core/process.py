"""Child processes: die with the parent, and kill a whole process tree.

Shared by the cell runner (cell children), the cells themselves (conversion and calibration
jobs) and the engines that start programs of their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

_PR_SET_PDEATHSIG = 1
# what a time limit sends (timeout(1), Slurm, systemd) and what a closed terminal sends
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """A terminating signal from outside (raise_on_termination): unwinds to whoever turns
    the running cell into its row, then ends the process as the signal would."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def raise_on_termination() -> None:
    """SIGTERM and SIGHUP raise Terminated in the main thread. Without a handler, a process
    that is PID 1 of its PID namespace (`unshare -p -f`, a container's entry point) ignores
    them, and a time limit's SIGTERM then waits for its SIGKILL, which leaves no row."""
    for sig in TERMINATING:
        signal.signal(sig, _raise_terminated)


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """A terminating signal that arrives inside the block is delivered when it ends (a row
    being written is finished first)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def end_as(terminated: Terminated) -> None:
    """End this process as the signal would have (its parent sees -SIGTERM: a nightly
    resumes the run); as PID 1, which a default SIGTERM cannot end, exit 128 + signal."""
    signal.signal(terminated.signum, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), terminated.signum)
    sys.exit(128 + terminated.signum)


def die_with_parent(parent: Optional[int] = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere),
    so a killed sweep leaves no cell measuring nothing. Call it first, before heavy imports.
    `parent`: the pid that started this process; when it died before the request (the kernel
    then never sends the signal), this process ends now."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


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

    from bench.core.paths import REPO

    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


# --- out-of-memory evidence ---------------------------------------------------------------


def _counter(path: Path, key: str) -> Optional[int]:
    """`key N` out of a kernel counters file (/proc/vmstat, memory.events, ...)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _memory_cgroup_counter() -> tuple[Optional[str], Optional[int]]:
    """This process's memory cgroup and its OOM-kill count (cgroup v2 memory.events, or
    v1 memory.oom_control)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":  # v1
            where = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"
            return str(where), _counter(where, "oom_kill")
    for line in lines:
        if line.startswith("0::"):  # v2
            where = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events"
            return str(where), _counter(where, "oom_kill")
    return None, None


@dataclass(frozen=True)
class OomCounters:
    """The kernel's out-of-memory kill counters at one moment."""

    system: Optional[int]  # /proc/vmstat oom_kill: every OOM kill on this machine
    cgroup_file: Optional[str]
    cgroup: Optional[int]  # this process's memory cgroup's OOM kills

    @classmethod
    def now(cls) -> "OomCounters":
        cgroup_file, cgroup = _memory_cgroup_counter()
        return cls(_counter(Path("/proc/vmstat"), "oom_kill"), cgroup_file, cgroup)

    def evidence_since(self, before: "OomCounters") -> Optional[str]:
        """How the kernel says it killed for memory since `before`, or None."""
        found = []
        if None not in (self.system, before.system) and self.system > before.system:
            found.append(f"/proc/vmstat oom_kill +{self.system - before.system}")
        if None not in (self.cgroup, before.cgroup) and self.cgroup > before.cgroup:
            found.append(f"{self.cgroup_file} oom_kill +{self.cgroup - before.cgroup}")
        return ", ".join(found) or None
