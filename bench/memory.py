"""Memory measurement, engine-independent: host RSS peaks and NVML per-process device peaks.

Runs inside the cell's child process. Pollers sleep between samples so they never compete
with the model for the CPU (DESIGN.md: a spinning thread distorts the speed figures).
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

import psutil

# --- host RAM ----------------------------------------------------------------------------


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


def _pss_bytes(pid: int) -> Optional[int]:
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


# --- CUDA (NVML) ---------------------------------------------------------------------------


class NvmlPeak:
    """Device memory the driver attributes to the watched processes (CUDA context included),
    polled every 10 ms in a sleeping thread, as optimum-benchmark's NVML tracker does. The
    processes come from a callable, so a server's whole process tree can be watched."""

    def __init__(self, device_index: int, pids: Optional[Callable[[], list[int]]] = None,
                 interval_s: float = 0.01) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self._pids = pids or (lambda: [os.getpid()])
        self._interval = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def used_bytes(self) -> Optional[int]:
        """Summed over the watched processes; None when the driver maps none of them."""
        watched = set(self._pids())
        found: dict[int, int] = {}
        for getter in ("nvmlDeviceGetComputeRunningProcesses",
                       "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in getattr(self._nvml, getter)(self._handle):
                if proc.pid in watched and proc.usedGpuMemory is not None:
                    found[proc.pid] = max(found.get(proc.pid, 0), int(proc.usedGpuMemory))
        return sum(found.values()) if found else None  # a container may hide our pids

    def total_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total)

    def device_name(self) -> str:
        name = self._nvml.nvmlDeviceGetName(self._handle)
        return name.decode() if isinstance(name, bytes) else str(name)

    def driver_version(self) -> str:
        version = self._nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)

    def start(self) -> None:
        self._peak = self.used_bytes() or 0
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            used = self.used_bytes()
            if used is not None:
                self._peak = max(self._peak, used)

    def peak(self) -> Optional[int]:
        """Peak so far; None when the driver never attributed memory to the processes."""
        used = self.used_bytes()
        if used is not None:
            self._peak = max(self._peak, used)
        return self._peak or None

    def stop(self) -> Optional[int]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.peak()
