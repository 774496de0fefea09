"""Files and directories that appear whole or not at all.

Results, cache entries (tiny model, GPTQ calibrations, GGUF conversions), lm-eval task files
and published reports are all written under a temporary dot-name next to their final path
and renamed into place: a reader (or a concurrent cell building the same entry) never sees
half of one, and a crash leaves only a dot-file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


@contextmanager
def staged_file(final: Path, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `final`; renamed onto it when the block ends without error."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def copy_file(src: Path, dst: Path) -> None:
    with staged_file(dst) as tmp:
        shutil.copyfile(src, tmp)


def _builder_gone(work: Path) -> bool:
    """Whether the process that made a staging directory (its pid is in the name) is gone:
    no such process, or one started after the directory (its pid reused)."""
    import psutil

    try:
        pid = int(work.name.rsplit(".", 2)[-2])
        made = work.stat().st_mtime
    except (ValueError, IndexError, OSError):
        return False  # not one of ours: leave it
    try:
        return psutil.Process(pid).create_time() > made + 1.0
    except psutil.NoSuchProcess:
        return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Staging directories of `target` whose builder was killed (a cell killed mid-build):
    removed, so a killed build does not leave its half in the cache for ever."""
    removed = []
    for work in target.parent.glob(f".{target.name}.*.stage"):
        if work.is_dir() and _builder_gone(work):
            shutil.rmtree(work, ignore_errors=True)
            removed.append(work)
    return removed


@contextmanager
def staged_dir(target: Path, done_marker: str, product: Optional[str] = None) -> Iterator[Path]:
    """A work directory beside `target` (named with this process's pid). When the block ends
    without error, the work directory (or its `product` subdirectory) is renamed to
    `target`; if a concurrent builder got there first (`target/done_marker` exists), its
    entry is kept. The work directory is removed whatever happens, and those of builders
    that were killed before are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{uuid.uuid4().hex[:8]}.",
                                 suffix=f".{os.getpid()}.stage", dir=target.parent))
    try:
        yield work
        try:
            os.rename(work / product if product else work, target)
        except OSError:
            if not (target / done_marker).exists():  # not a concurrent builder's win
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
