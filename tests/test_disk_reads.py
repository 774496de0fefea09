"""The disk-read meter: what loading read, measured around a real load (a file read through
read() and a memory-mapped one), and null with the reason where /proc says nothing."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from types import SimpleNamespace

from bench.meters import disk_reads


class _Loaded(SimpleNamespace):
    def pids(self) -> list[int]:
        return self._pids


def test_a_load_that_reads_a_file_is_counted(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(4 * 2**20))
    fields: dict = {}
    meter = disk_reads.DiskReadMeter(fields.update)
    meter.phase("load")
    data = weights.read_bytes()  # through read(): rchar counts it, cached or not
    with open(weights, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m[: len(data)] == data
    meter.loaded(_Loaded(_pids=[os.getpid()], owns_processes=True))
    assert fields["load_read_chars"] >= len(data)
    assert fields["load_read_bytes"] >= 0  # from storage: 0 when the page cache held it


def test_an_attached_server_and_a_silent_proc_leave_a_reason(monkeypatch) -> None:
    fields: dict = {}
    meter = disk_reads.DiskReadMeter(fields.update)
    meter.phase("load")
    meter.loaded(_Loaded(_pids=[1234567], owns_processes=False))
    assert "attached server" in fields["load_read_note"] and "load_read_bytes" not in fields
    monkeypatch.setattr(disk_reads, "_io", lambda pids: None)
    meter.phase("load")
    meter.loaded(_Loaded(_pids=[os.getpid()], owns_processes=True))
    assert "no I/O counters" in fields["load_read_note"]
