"""Energy per token, from hardware energy counters: NVML's total-energy counter of the GPU a
cell runs on, or the CPU's RAPL / powercap package counters for a CPU cell; else null with
the reason.

Counters, not sampled power (no sampling error): the counter is read when a timed window
opens and closes. The timed calls (prefill and decode) form one window; the prefill-only
calls the meter asks for (`PREFILL`: one token per call, at least a second of them) form
another; decode energy is the difference, as optimum-benchmark splits it. Idle power is
measured first (the counter over one idle second) and subtracted, and the row says so. A RAPL
counter wraps at `max_energy_range_uj`: a sleeping thread reads it every few seconds while a
window is open, so no wrap is lost. zeus-ml measures the same counters, but over CUDA
indices (bench watches the GPU found by UUID) and with a monitoring process of its own; this
module is the arithmetic alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from bench.meters import GENERATE, PREFILL, CellFacts, Meter, Report

if TYPE_CHECKING:
    from bench.core.gpu import NvmlDevice

POWERCAP = Path("/sys/class/powercap")
IDLE_S = 1.0  # how long idle power is measured before the first window
WRAP_POLL_S = 5.0


class Counter(Protocol):
    method: str

    def read_j(self) -> float:
        """Joules since some fixed moment (monotonic; wraps already undone)."""


class NvmlEnergy:
    """NVML's total energy of a whole GPU (millijoules since the driver loaded, Volta on)."""

    def __init__(self, device: "NvmlDevice") -> None:
        if device.is_mig:
            raise LookupError("a MIG slice has no energy counter of its own (NVML counts the "
                              "whole GPU, other slices included)")
        self._device = device
        self.method = "nvml-total-energy"
        self.read_j()  # raises where the GPU has no counter (before Volta)

    def read_j(self) -> float:
        return int(self._device.lib.nvmlDeviceGetTotalEnergyConsumption(
            self._device.handle)) / 1e3


class _Zone:
    """One RAPL zone's energy_uj, with its wraps counted (read often enough: < one wrap)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.range_uj = int((path / "max_energy_range_uj").read_text())
        self._last = self._raw()
        self._total = 0

    def _raw(self) -> int:
        return int((self.path / "energy_uj").read_text())

    def read_uj(self) -> int:
        now = self._raw()
        self._total += (now - self._last) % (self.range_uj + 1)
        self._last = now
        return self._total


class RaplEnergy:
    """The CPU packages' RAPL counters under /sys/class/powercap (Intel, and AMD's since
    Linux 5.8 through the same interface), summed over packages."""

    def __init__(self, root: Path = POWERCAP) -> None:
        zones = []
        for path in sorted(root.glob("*-rapl:*")):
            name_file = path / "name"
            if path.name.count(":") != 1 or not name_file.exists():
                continue  # a sub-zone (core, uncore, dram) or no zone at all
            if name_file.read_text().strip().startswith("package"):
                zones.append(path)
        if not zones:
            raise LookupError(f"no RAPL package counter under {root}")
        self._zones = [_Zone(p) for p in zones]  # PermissionError: not readable (root only)
        self.method = "rapl:" + "+".join((p / "name").read_text().strip() for p in zones)

    def read_j(self) -> float:
        return sum(z.read_uj() for z in self._zones) / 1e6


def counter_for(device: Optional["NvmlDevice"],
                root: Path = POWERCAP) -> tuple[Optional[Counter], Optional[str]]:
    """The energy counter of a cell's device (the GPU's for a CUDA cell, the CPU packages'
    otherwise), or None with the reason."""
    try:
        if device is not None:
            return NvmlEnergy(device), None
        return RaplEnergy(root), None
    except (LookupError, OSError, ValueError) as exc:
        where = "GPU" if device is not None else "CPU"
        return None, f"energy not measured: no readable {where} energy counter ({exc})"
    except Exception as exc:  # NVML's own error (not supported on this GPU)
        return None, f"energy not measured: the GPU's energy counter is unavailable ({exc})"


@dataclass
class Window:
    joules: float
    seconds: float
    calls: int
    tokens: int


def energy_fields(generate: Window, prefill: Optional[Window], idle_w: float, batch: int,
                  method: str) -> dict[str, object]:
    """The row's energy columns from the two windows (idle power subtracted): joules per call
    for prefill and decode, joules per decode token, tokens per joule, mean power."""

    def net(w: Window) -> float:
        return max(0.0, w.joules - idle_w * w.seconds)

    per_call = net(generate) / generate.calls
    out: dict[str, object] = {"energy_j": generate.joules, "energy_call_j": per_call,
                              "power_w": generate.joules / generate.seconds,
                              "idle_power_w": idle_w,
                              "energy_method": f"{method}, idle {idle_w:.1f} W subtracted"}
    tokens_per_call = generate.tokens / generate.calls
    if not tokens_per_call:  # calls that make images, not tokens
        return out
    if prefill is not None and prefill.calls:
        prefill_call = net(prefill) / prefill.calls
        decode_call = max(0.0, per_call - prefill_call)
        decode_tokens = tokens_per_call - batch  # the first token of each sequence: prefill
        out.update(energy_prefill_j=prefill_call, energy_decode_j=decode_call)
        per_token = decode_call / decode_tokens if decode_tokens > 0 else None
    else:
        per_token = per_call / tokens_per_call
        out["energy_note"] = "no prefill-only window: joules per token include the prefill"
    out["j_per_token"] = per_token
    out["tokens_per_j"] = 1.0 / per_token if per_token else None
    return out


class EnergyMeter(Meter):
    """Energy of the timed calls, split into prefill and decode, per generated token."""

    rank = 40

    @classmethod
    def build(cls, cell: CellFacts) -> "EnergyMeter":
        counter, reason = counter_for(cell.gpu)
        return cls(cell.report, counter, reason, cell.cfg.workload.batch_size)

    def __init__(self, report: Report, counter: Optional[Counter], reason: Optional[str],
                 batch_size: int) -> None:
        super().__init__(report)
        self._counter = counter
        self._batch = batch_size
        self._idle_w: Optional[float] = None
        self._windows: dict[str, Window] = {}
        self._opened: tuple[float, float] = (0.0, 0.0)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if counter is None:
            report(energy_note=reason)

    def wants(self, kind: str) -> bool:
        return self._counter is not None and kind == PREFILL

    def _poll(self) -> None:  # reads often enough that a RAPL counter cannot wrap unseen
        assert self._counter is not None
        while not self._stop.wait(WRAP_POLL_S):
            self._counter.read_j()

    def open(self, kind: str) -> None:
        if self._counter is None:
            return
        if self._idle_w is None:
            start, began = self._counter.read_j(), time.perf_counter()
            time.sleep(IDLE_S)
            idle_s = time.perf_counter() - began
            self._idle_w = (self._counter.read_j() - start) / idle_s if idle_s > 0 else 0.0
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        self._opened = (time.perf_counter(), self._counter.read_j())

    def close(self, kind: str, calls: int, tokens: int) -> None:
        if self._counter is None:
            return
        joules = self._counter.read_j() - self._opened[1]
        seconds = time.perf_counter() - self._opened[0]
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._windows[kind] = Window(joules, seconds, calls, tokens)
        if kind == PREFILL or (kind == GENERATE and not self.wants(PREFILL)):
            self._report()

    def _report(self) -> None:
        generate = self._windows.get(GENERATE)
        if self._counter is None or generate is None or not generate.calls:
            return
        self.report(**energy_fields(generate, self._windows.get(PREFILL),
                                    self._idle_w or 0.0, self._batch, self._counter.method))

    def stop(self) -> None:
        self._stop.set()
        if GENERATE in self._windows and PREFILL not in self._windows:
            self._report()  # the prefill window never ran (the cell ended first)


METER = EnergyMeter
