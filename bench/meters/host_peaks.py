"""Host memory: the peak resident memory of the cell's process (or of a server's process
tree) per phase, from the kernel's own high-water mark.

Runs inside the cell's child process. Pollers sleep between samples so they never compete
with the model for the CPU (a spinning thread distorts the speed figures).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Callable, Optional

import psutil

from bench.meters import Meter, Report

if TYPE_CHECKING:
    from bench.engines.base import LoadedModel


def _proc_kib(path: str, key: str) -> Optional[int]:
    """A `Key:   N kB` line of a /proc file, in bytes (None: no such process or line)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _vm_hwm_bytes(pid: str = "self") -> Optional[int]:
    return _proc_kib(f"/proc/{pid}/status", "VmHWM:")


def _reset_hwm(pid: str = "self") -> bool:
    """Start the kernel's high-water mark afresh (same user, or root)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class HostPeak:
    """Peak resident memory of this process over a phase.

    Uses the kernel's own high-water mark (VmHWM, reset through /proc/self/clear_refs):
    exact and free. Where that is unavailable, a psutil poller sleeping 10 ms between
    samples stands in.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval = interval_s
        self._proc = psutil.Process()
        self._use_hwm = _reset_hwm() and _vm_hwm_bytes() is not None
        self._peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def current(self) -> int:
        return self._proc.memory_info().rss

    def start(self) -> None:
        self._peak = self.current()
        if self._use_hwm:
            _reset_hwm()
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self.current())

    def stop(self) -> int:
        """Peak RSS in bytes since start()."""
        if self._use_hwm:
            return max(self._peak, _vm_hwm_bytes() or 0, self.current())
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return max(self._peak, self.current())


class TreePeak:
    """Peak resident memory of other processes (a server and what it spawned) over a phase:
    the sum of each one's kernel high-water mark (VmHWM), reset at start where the kernel
    lets us. Nothing polls. For one process the figure is exact; for several it is an upper
    bound (their peaks may not coincide), which is the safe side of "will it fit". A process
    whose mark cannot be reset counts its peak since it started (its load included)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids

    def start(self) -> None:
        for pid in self._pids():
            _reset_hwm(str(pid))

    def stop(self) -> Optional[int]:
        """Summed peak in bytes since start(); None when no watched process is readable."""
        marks = [_vm_hwm_bytes(str(pid)) for pid in self._pids()]
        found = [m for m in marks if m is not None]
        return sum(found) if found else None

    def pss(self) -> Optional[int]:
        """Their proportional set size now: each shared page split between the processes
        sharing it, so libraries mapped by several count once (the sum of peaks above counts
        them in every process)."""
        sizes = [_pss_bytes(pid) for pid in self._pids()]
        found = [s for s in sizes if s is not None]
        return sum(found) if found else None


class NoPeak:
    """Processes bench does not own (an attached server): their peak counters are neither
    reset nor read as bench's measurement; every figure is None."""

    def start(self) -> None:
        return None

    def stop(self) -> Optional[int]:
        return None

    def pss(self) -> Optional[int]:
        return None


def _pss_bytes(pid: int) -> Optional[int]:
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")




class HostMemoryMeter(Meter):
    """Peak host RSS of the load and of the speed phase: this process's, or a started
    server's process tree (the sum of their peaks; PSS beside it), or nothing for a server
    bench does not own."""

    rank = 10

    def __init__(self, report: Report) -> None:
        super().__init__(report)
        self._host: "HostPeak | TreePeak | NoPeak" = HostPeak()
        self._phase = ""
        self._load_peak: Optional[int] = None
        self._server = False
        report(host_rss_baseline_bytes=self._host.current())

    def phase(self, name: str) -> None:
        if self._phase == "speed":  # the speed phase ends
            speed = self._host.stop()
            peaks = [p for p in (self._load_peak, speed) if p is not None]
            self.report(peak_host_rss_bytes=max(peaks) if peaks else None)
            if self._server:
                self.report(host_pss_bytes=self._host.pss())
        self._phase = name
        if name in ("load", "speed"):
            self._host.start()

    def loaded(self, model: "LoadedModel") -> None:
        peak: Optional[int] = self._host.stop()
        watched = model.pids()
        if watched != [os.getpid()]:  # a server: its processes' peaks since they started
            self._server = True
            self._host = TreePeak(model.pids) if model.owns_processes else NoPeak()
            peak = self._host.stop()
        self._load_peak = peak
        self.report(peak_host_rss_load_bytes=peak, peak_host_rss_bytes=peak)


METER = HostMemoryMeter
