"""What else the machine was doing while a cell was timed: other processes' CPU time and the
load average, over exactly the timed window. Shared cores make a timing meaningless unless
its conditions are recorded; the report flags rows measured on a busy machine."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import psutil

from bench.meters import GENERATE, Meter, Report

if TYPE_CHECKING:
    from bench.engines.base import LoadedModel

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (guest is in user)


def _machine_busy_s() -> Optional[float]:
    """CPU seconds every process of the machine has used since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
        return sum(int(fields[i]) for i in _BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass(frozen=True)
class CpuSnapshot:
    machine_s: Optional[float]
    own_s: float


class ForeignCpu:
    """CPU time the rest of the machine used between start() and stop(): the machine's
    busy time minus the watched processes' own (the cell's; a server's tree)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._start: Optional[CpuSnapshot] = None

    def _now(self) -> CpuSnapshot:
        return CpuSnapshot(_machine_busy_s(), _own_cpu_s(self._pids()))

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> Optional[float]:
        end = self._now()
        start = self._start
        if start is None or start.machine_s is None or end.machine_s is None:
            return None
        return max(0.0, (end.machine_s - start.machine_s) - (end.own_s - start.own_s))


def load_avg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class ConditionsMeter(Meter):
    """Other processes' CPU seconds over the timed window (and its load average at the end);
    for a server, the CPU its client (this process) used meanwhile."""

    rank = 20

    def __init__(self, report: Report) -> None:
        super().__init__(report)
        self._watched: list[int] = [os.getpid()]
        self._server = False
        self._foreign = ForeignCpu(lambda: self._watched)
        self._client_cpu = 0.0

    def loaded(self, model: "LoadedModel") -> None:
        pids = model.pids()
        self._server = pids != [os.getpid()]
        # the processes doing this cell's work: the model's, and a server's client (this one)
        self._watched = [*pids, os.getpid()] if self._server else pids

    def open(self, kind: str) -> None:
        if kind == GENERATE:
            self._foreign.start()
            self._client_cpu = time.process_time()

    def close(self, kind: str, calls: int, tokens: int) -> None:
        if kind != GENERATE:
            return
        client = time.process_time() - self._client_cpu
        self.report(foreign_cpu_s=self._foreign.stop(), load_avg=load_avg(),
                    **({"client_cpu_s": client} if self._server else {}))


METER = ConditionsMeter
