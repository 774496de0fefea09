"""What loading read from storage: the bytes the cell's processes fetched from disk while
the model loaded (/proc/<pid>/io read_bytes, page faults of memory-mapped weights included),
and everything they read through read() (rchar, page-cache hits included). A load that read
next to nothing from disk was warm (the weights sat in the page cache): its load_s is not a
cold start's, and the two should not be compared as one history."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import psutil

from bench.meters import Meter, Report

if TYPE_CHECKING:
    from bench.engines.base import LoadedModel


def _io(pids: list[int]) -> Optional[tuple[int, int]]:
    """(read_bytes, read_chars) summed over the processes; None where /proc does not say
    (another user's process, a kernel without task I/O accounting)."""
    storage = chars = 0
    for pid in pids:
        try:
            counters = psutil.Process(pid).io_counters()
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            return None
        storage += counters.read_bytes
        chars += getattr(counters, "read_chars", 0)
    return storage, chars


class DiskReadMeter(Meter):
    """Reads during the load phase: this process's since the load began, or, for a server
    it started, its whole process tree's (they began with the load)."""

    rank = 50

    def __init__(self, report: Report) -> None:
        super().__init__(report)
        self._before: Optional[tuple[int, int]] = None

    def phase(self, name: str) -> None:
        if name == "load":
            self._before = _io([os.getpid()])

    def loaded(self, model: "LoadedModel") -> None:
        pids = model.pids()
        own = pids == [os.getpid()]
        if not own and not model.owns_processes:  # an attached server: not ours to read
            self.report(load_read_note="an attached server's reads are not measured")
            return
        after = _io(pids)
        before = self._before if own else (0, 0)
        if after is None or before is None:
            self.report(load_read_note="/proc gives no I/O counters for the cell's "
                                       "processes here")
            return
        self.report(load_read_bytes=after[0] - before[0], load_read_chars=after[1] - before[1])


METER = DiskReadMeter
