"""Where a sweep writes: checked before any work, and never losing a measured row.

A results or reports directory that cannot take files (a regular file, a read-only place,
/proc, a full disk) is one clear line before anything is measured. If a finished row still
cannot be written (the disk filled during the sweep), it is kept as JSON beside the cell's
log, the sweep goes on, and the invocation exits non-zero naming where the row went.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from bench.core.errors import BenchInputError
from bench.core.schema import ResultRow

MIN_FREE_BYTES = 64 * 2**20  # a cell's row is kilobytes; a report a few MiB
# Rows that could not be written to the results directory in this process (the basic
# launcher runs every job here; `bench.app` exits non-zero when this is not empty).
UNSAVED: list[Path] = []


def resolved_dir(key: str, path: str | os.PathLike) -> Path:
    """The absolute path of a directory setting, or BenchInputError for an empty value or a
    symbolic-link loop."""
    if not str(path).strip():
        raise BenchInputError(f"{key} is empty: give a directory (it would be the working "
                              f"directory)")
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop, an unreadable component
        raise BenchInputError(f"{key}={str(path)!r} cannot be resolved: {exc}") from None


def check_writable_dir(key: str, path: str | os.PathLike) -> Path:
    """Raise BenchInputError unless `path` is (or can be made) a directory bench can write
    files into, with some free space. Creates it (a valid path is about to be used);
    returns it resolved."""
    where = resolved_dir(key, path)
    if where.exists() and not where.is_dir():
        raise BenchInputError(f"{key}={str(path)!r} is a file, not a directory")
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".bench-write-check-"):
            pass
    except OSError as exc:
        raise BenchInputError(f"{key}={str(where)!r} cannot take files: "
                              f"{exc.strerror or exc}") from None
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        raise BenchInputError(f"{key}={str(where)!r} has {free / 2**20:.0f} MiB free; bench "
                              f"needs at least {MIN_FREE_BYTES // 2**20} MiB")
    return where


def keep_unsaved(row: ResultRow, error: OSError, log_path: Optional[str]) -> Path:
    """Write a row the results directory refused as JSON beside the cell's log (or the
    working directory); say where on stderr; remember it for the exit status."""
    folder = Path(log_path).parent if log_path else Path.cwd()
    target = folder / f"unsaved-row-{row.cell_id}.json"
    record = json.dumps(dataclasses.asdict(row), default=str, indent=1)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(record + "\n", encoding="utf-8")
    except OSError:  # nowhere to write it: the row goes to stderr whole
        print(record, file=sys.stderr)
        target = Path("<stderr>")
    print(f"bench: error: the row of cell {row.cell_id} could not be written to the results "
          f"directory ({error.strerror or error}); kept in {target}", file=sys.stderr)
    UNSAVED.append(target)
    return target
