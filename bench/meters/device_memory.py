"""Device memory: what the driver attributes to the cell's processes on its GPU (CUDA
context included), per phase, with the method of every figure; and what the GPU did during
the timed window (the share of time kernels ran, clocks, other processes).

Runs inside the cell's child process; the poller sleeps between samples.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from bench.meters import GENERATE, CellFacts, Meter, Report

if TYPE_CHECKING:
    from bench.core.gpu import NvmlDevice
    from bench.engines.base import Device, Engine, LoadedModel

PROCESS = "nvml-process"  # NVML's per-process figure for the watched PIDs
DEVICE_RISE = "nvml-device-rise"  # device-level use minus its level before the cell started
_WINDOW_EVERY = 10  # utilisation and clocks on every 10th sample (the driver's own period)


@dataclass(frozen=True)
class DevicePeak:
    """A device-memory figure, the method that produced it, and why it is null if it is."""

    bytes: Optional[int]
    method: Optional[str]
    note: Optional[str] = None


@dataclass
class _Segment:
    process: int = 0  # peak of the watched PIDs' summed NVML figures
    rise: int = 0  # peak of the device-level rise


@dataclass
class GpuWindow:
    """What the GPU did during the timed window: the share of time kernels ran (NVML's
    "utilization"), clocks, other processes."""

    util: list[int] = field(default_factory=list)
    sm_mhz: list[int] = field(default_factory=list)
    mem_mhz: list[int] = field(default_factory=list)
    foreign_processes: int = 0
    foreign_bytes: Optional[int] = 0  # None: not attributable (a PID namespace)

    def fields(self) -> dict[str, Any]:
        def mean(values: list[int]) -> Optional[float]:
            return sum(values) / len(values) if values else None

        return {"gpu_kernel_time_pct": mean(self.util), "gpu_sm_clock_mhz": mean(self.sm_mhz),
                "gpu_mem_clock_mhz": mean(self.mem_mhz),
                "gpu_foreign_processes": self.foreign_processes,
                "gpu_foreign_bytes": self.foreign_bytes}


class DeviceMemory:
    """Device memory the driver attributes to the watched processes (CUDA context included),
    polled every 10 ms in a sleeping thread, as optimum-benchmark's NVML tracker does, with a
    peak per phase.

    Create it before the cell's CUDA context exists: it records what the device held and who
    was on it then. NVML lists processes by the host's PIDs, so inside a container (its own
    PID namespace) none of the watched PIDs appears. Then, and only while the processes on
    the device are no more than the watched ones and nobody else was there at the start, the
    device-level rise since the start stands in (DEVICE_RISE); otherwise the figure is null
    with the reason. The method of every figure is recorded, never a silent null.
    """

    def __init__(self, device: "NvmlDevice", pids: Callable[[], list[int]],
                 interval_s: float = 0.01) -> None:
        self.device = device
        self._pids = pids
        self._interval = interval_s
        self.used_at_start = device.used_bytes()
        watched = set(pids())
        self.others_at_start = [p for p in device.processes() if p.pid not in watched]
        self._rise_valid = not self.others_at_start
        self._seen_ours = False  # NVML listed a watched PID with a memory figure
        self._listed_without_figure = False  # ... or listed one with usedGpuMemory N/A
        self._segments: dict[str, _Segment] = {}
        self._phase = "start"
        self._window: Optional[GpuWindow] = None
        self._samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    # sampling ----------------------------------------------------------------------------

    def _sample(self) -> tuple[Optional[int], Optional[int]]:
        """(the watched PIDs' summed figure or None, the device-level rise or None)."""
        watched = set(self._pids())
        procs = self.device.processes()
        listed = [p for p in procs if p.pid in watched]
        # pynvml gives usedGpuMemory None where NVML has no figure (NVML_VALUE_NOT_AVAILABLE)
        ours = [p for p in listed if p.used_bytes is not None]
        if ours:
            self._seen_ours = True
        elif listed:
            self._listed_without_figure = True
        # more processes than ours could be: someone else is on the card
        if (len(procs) > len(watched) and not listed) or len(procs) > len(listed) > 0:
            self._rise_valid = False
        process = sum(p.used_bytes for p in ours) if ours else None  # type: ignore[misc]
        rise = max(0, self.device.used_bytes() - self.used_at_start)
        with self._lock:
            seg = self._segments.setdefault(self._phase, _Segment())
            if process is not None:
                seg.process = max(seg.process, process)
            seg.rise = max(seg.rise, rise)
            window = self._window
        if window is not None:
            if listed:
                foreign = [p for p in procs if p.pid not in watched]
                count = len(foreign)
                if window.foreign_bytes is not None:
                    window.foreign_bytes = max(window.foreign_bytes,
                                               sum(p.used_bytes or 0 for p in foreign))
            else:  # host PIDs: only how many more processes there are than ours
                count = max(0, len(procs) - len(watched))
                window.foreign_bytes = None
            window.foreign_processes = max(window.foreign_processes, count)
            if self._samples % _WINDOW_EVERY == 0:
                self._sample_window(window)
        self._samples += 1
        return process, rise

    def _sample_window(self, window: GpuWindow) -> None:
        util = self.device.utilization_pct()
        sm, mem = self.device.clocks_mhz()
        for values, value in ((window.util, util), (window.sm_mhz, sm),
                              (window.mem_mhz, mem)):
            if value is not None:
                values.append(int(value))

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _why_not_per_process(self) -> str:
        if self._listed_without_figure:
            return ("NVML lists the cell's PID with no memory figure (usedGpuMemory N/A: a "
                    "driver or vGPU that does not account per process)")
        return "NVML lists none of the cell's PIDs (a PID namespace: a container)"

    def _figure(self, process: Optional[int], rise: Optional[int]) -> DevicePeak:
        if self._seen_ours:
            return DevicePeak(process or None, PROCESS)
        why = self._why_not_per_process()
        if self._rise_valid and rise:
            return DevicePeak(rise, DEVICE_RISE, f"{why}; the device-level rise since the "
                              f"start stands in, no other process being on the GPU")
        if not self._rise_valid:
            others = len(self.others_at_start)
            return DevicePeak(None, None, f"{why} and other processes use the GPU ({others} "
                              f"at the start): the device-level rise cannot be attributed "
                              f"to the cell")
        return DevicePeak(None, None, "NVML attributed no device memory to the cell")

    # the meter's interface -----------------------------------------------------------------

    def current(self) -> DevicePeak:
        """The watched processes' device memory now (a CUDA context's size, say)."""
        process, rise = self._sample()
        return self._figure(process, rise)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def enter(self, phase: str) -> None:
        """Samples from now on count for `phase` (the sample taken now closes the last)."""
        self._sample()
        with self._lock:
            self._phase = phase

    def open_window(self) -> None:
        """The timed window begins: utilisation, clocks and other processes are watched."""
        with self._lock:
            self._window = GpuWindow()
        self._samples = 0

    def close_window(self) -> dict[str, Any]:
        with self._lock:
            window, self._window = self._window, None
        return window.fields() if window is not None else {}

    def peak(self, *phases: str) -> DevicePeak:
        """The peak over the given phases (all of them when none is named)."""
        self._sample()
        with self._lock:
            segs = [s for name, s in self._segments.items() if not phases or name in phases]
        if not segs:
            return DevicePeak(None, None, "no sample in those phases")
        return self._figure(max(s.process for s in segs), max(s.rise for s in segs))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def conditions(self) -> dict[str, Any]:
        """Who else was on the GPU when the cell started, and what it held."""
        used = [p.used_bytes for p in self.others_at_start if p.used_bytes is not None]
        return {"gpu_others_at_start": len(self.others_at_start),
                "gpu_used_at_start_bytes": self.used_at_start,
                "gpu_others_used_bytes": sum(used) if used else None}


def unseen_bytes(peak: Optional[int], context: Optional[int],
                 reserved_peak: Optional[int]) -> Optional[int]:
    """How much higher the device peak was than NVML's 10 ms samples saw, as far as the
    allocator's exact peak shows it: the context plus the allocator's reserved peak is
    device memory the process certainly held at once, and a sampled peak below it missed
    the difference (0: the samples saw at least that). None where either is unknown."""
    if peak is None or context is None or reserved_peak is None:
        return None
    return max(0, context + reserved_peak - peak)


class DeviceMemoryMeter(Meter):
    """The device peak of the stated workload (load and speed), per phase, how it was
    measured, the context of engines that make theirs while loading, what the engine's own
    accounting adds (allocator peaks, a server's need), and the GPU during the timed window.
    Its DeviceMemory is made before the cell's CUDA context (bench.sweep.cell)."""

    rank = 30

    @classmethod
    def build(cls, cell: CellFacts) -> "Optional[DeviceMemoryMeter]":
        if cell.device_memory is None:  # a CPU cell, or no NVML
            return None
        return cls(cell.report, cell.device_memory, cell.engine, cell.device,
                   context_known=cell.engine.capabilities.context_at_start,
                   context_bytes=cell.context_bytes)

    def __init__(self, report: Report, memory: DeviceMemory, engine: "Engine",
                 device: "Device", context_known: bool,
                 context_bytes: Optional[int] = None) -> None:
        super().__init__(report)
        self.memory = memory
        self._engine, self._device = engine, device
        self._context_known = context_known
        self._context = context_bytes
        self._model: "Optional[LoadedModel]" = None
        self._phase = ""

    def _peak(self, column: str, *phases: str) -> None:
        self.report(**{column: self.memory.peak(*phases).bytes})

    def phase(self, name: str) -> None:
        if self._phase == "speed":
            self._workload_peak()
        self._phase = name
        self.memory.enter(name)

    def loaded(self, model: "LoadedModel") -> None:
        self._model = model
        if not self._context_known:  # the context: its device memory less the engine's own
            buffers = model.device_buffers_bytes()
            now = self.memory.current().bytes
            if buffers is not None and now is not None and now >= buffers:
                self.report(context_bytes=now - buffers)
        self._peak("peak_device_load_bytes", "load")

    def open(self, kind: str) -> None:
        if kind == GENERATE:
            self.memory.open_window()

    def close(self, kind: str, calls: int, tokens: int) -> None:
        if kind == GENERATE:
            self.report(**self.memory.close_window())

    def _workload_peak(self) -> None:
        allocator: dict[str, Optional[int]] = {}
        if self._engine.capabilities.allocator_peaks:
            allocator = self._engine.allocator_peaks(self._device)
            self.report(**allocator)
        peak = self.memory.peak("load", "speed")
        self.report(peak_device_bytes=peak.bytes, device_peak_method=peak.method,
                    peak_device_unseen_bytes=unseen_bytes(
                        peak.bytes, self._context, allocator.get("peak_reserved_bytes")),
                    **({"memory_note": peak.note} if peak.bytes is None else {}))
        if peak.bytes is not None and self._model is not None:
            self.report(**self._model.device_need(peak.bytes))

    def stop(self) -> None:
        if self._phase == "eval":
            self._peak("peak_device_eval_bytes", "eval")
        elif self._phase == "speed":  # the cell ended in its speed phase
            self._workload_peak()
        elif self._phase == "load" and self._model is None:  # the load failed: how far it got
            self._peak("peak_device_load_bytes", "load")
        self.memory.stop()


METER = DeviceMemoryMeter
