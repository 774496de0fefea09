"""Meters: what a cell measures besides the engine's own figures, each behind one interface.

A cell runs a list of meters (time, host memory, device memory, conditions, energy). Each is
told when the cell starts, when a phase begins (load, speed, eval), when the model is
loaded, when a timed window opens and closes (the timed calls; the prefill-only calls an
energy meter asks for), and when the cell ends whatever happened; it reports the row fields
it measured the moment they exist (so a cell that dies later keeps them). A new measurement
is one meter module (defining `METER`, its class: the cell builds every meter module's from
what it knows of the cell, bench.meters.CellFacts), its columns in bench.core.schema, and a
test.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.core.gpu import NvmlDevice
    from bench.engines.base import Device, Engine, LoadedModel
    from bench.meters.device_memory import DeviceMemory

from bench.meters.windows import GENERATE, PREFILL  # noqa: F401  (the timed windows)

Report = Callable[..., None]  # report(**fields): the row fields, sent to the parent at once


@dataclass(frozen=True)
class CellFacts:
    """What a meter is built from: the cell, its engine and device, and on CUDA its NVML
    device, the device-memory poller started before the CUDA context, and that context."""

    report: Report
    cfg: "BenchConfig"
    engine: "Engine"
    device: "Device"
    gpu: "Optional[NvmlDevice]" = None
    device_memory: "Optional[DeviceMemory]" = None
    context_bytes: Optional[int] = None


class Meter:
    """One measurement of a cell. Every hook is optional; `report` sends fields."""

    rank = 100  # the order the cell's meters are told things in (lower first)

    def __init__(self, report: Report) -> None:
        self.report = report

    @classmethod
    def build(cls, cell: CellFacts) -> Optional["Meter"]:
        """This meter for a cell (None: it has nothing to measure there)."""
        return cls(cell.report)

    def start(self) -> None:
        """The cell begins (before anything loads)."""

    def phase(self, name: str) -> None:
        """A phase begins: load, speed, eval."""

    def loaded(self, model: "LoadedModel") -> None:
        """The model is loaded (its processes, its own accounting are known)."""

    def open(self, kind: str) -> None:
        """A timed window opens (GENERATE: the timed calls; PREFILL: prefill-only calls)."""

    def close(self, kind: str, calls: int, tokens: int) -> None:
        """It closed after `calls` calls that generated `tokens` tokens."""

    def wants(self, kind: str) -> bool:
        """Whether this meter needs the optional window `kind` (PREFILL) to be run."""
        return False

    def stop(self) -> None:
        """The cell ends, whatever happened (threads stop, last figures reported)."""


class Meters(Meter):
    """The cell's meters, told everything in order (a bench.meters.windows.TimedWindow
    too: a task's speed phase opens and closes its windows on them)."""

    def __init__(self, report: Report, meters: Iterable[Meter] = ()) -> None:
        super().__init__(report)
        self.meters: list[Meter] = list(meters)

    def add(self, meter: Optional[Meter]) -> None:
        if meter is not None:
            self.meters.append(meter)

    def _each(self, hook: str, *args: Any) -> None:
        for meter in self.meters:
            getattr(meter, hook)(*args)

    def start(self) -> None:
        self._each("start")

    def phase(self, name: str) -> None:
        self._each("phase", name)

    def loaded(self, model: "LoadedModel") -> None:
        self._each("loaded", model)

    def open(self, kind: str) -> None:
        self._each("open", kind)

    def close(self, kind: str, calls: int, tokens: int) -> None:
        self._each("close", kind, calls, tokens)

    def wants(self, kind: str) -> bool:
        return any(m.wants(kind) for m in self.meters)

    def stop(self) -> None:
        errors = []
        for meter in self.meters:  # every meter stops, even when one fails to
            try:
                meter.stop()
            except Exception as exc:  # noqa: BLE001 - reported after the others stopped
                errors.append(exc)
        if errors:
            raise errors[0]


def build_meters(cell: CellFacts) -> list[Meter]:
    """Every meter module's METER, built for the cell, in rank order."""
    classes = [getattr(importlib.import_module(f"{__name__}.{m.name}"), "METER", None)
               for m in pkgutil.iter_modules(__path__)]
    built = (cls.build(cell) for cls in sorted(filter(None, classes), key=lambda c: c.rank))
    return [meter for meter in built if meter is not None]
