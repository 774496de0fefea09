"""The timed windows a task's speed procedure opens and closes around its calls, so that
the meters measure exactly those calls: GENERATE, the timed calls (warm-up excluded);
PREFILL, prefill-only calls a meter may ask for (an energy counter, to split prefill from
decode)."""

from __future__ import annotations

from typing import Protocol

GENERATE, PREFILL = "generate", "prefill"  # the timed windows' kinds


class TimedWindow(Protocol):
    """Told when the timed calls begin and end (warm-up excluded), and how many calls made
    how many tokens: what the machine and the device did over exactly that window is
    measured beside the speed (bench.meters.Meters). `wants(PREFILL)`: a meter needs a
    window of prefill-only calls too (an energy counter, to split prefill from decode)."""

    def open(self, kind: str) -> None: ...

    def close(self, kind: str, calls: int, tokens: int) -> None: ...

    def wants(self, kind: str) -> bool: ...


class NoWindow:
    """Nobody is listening (a speed measured without meters)."""

    def open(self, kind: str) -> None:
        return None

    def close(self, kind: str, calls: int, tokens: int) -> None:
        return None

    def wants(self, kind: str) -> bool:
        return False
