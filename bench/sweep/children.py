"""Where a cell's process comes from: a fresh interpreter, or a fork of a server that has the
engine's libraries imported.

Every cell runs in a process of its own (its memory, its CUDA context, its crash). Started
with multiprocessing's "spawn", each one imports torch and transformers (its modeling code
included) again: seconds of 2 cores before any work, in every cell and stage of a sweep. A
"forkserver" imports them once, in a process that does nothing else (no model, no CUDA
context, no thread), and forks every cell from it: the same isolation without the imports.
An engine that must not hold those libraries (llama.cpp, whose host memory is a result)
declares none and gets a fresh interpreter, and so does a CUDA cell until a GPU run proves
forked ones (`cell_context`). cell.fork_server=false spawns every cell. multiprocessing
gives a forked child the parent's working directory and import path; `adopt` gives it the
parent's environment as it is when the cell starts, as a spawned one has it (the server's is
that of its own start).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Optional

# first the server's own tie to the sweep, last bench's side of every cell
_FIRST, _LAST = "bench.sweep.server_start", "bench.sweep.cell"
_server_preload: Optional[tuple[str, ...]] = None  # what this process's fork server holds


def cell_context(preload: tuple[str, ...], fork_server: bool = True,
                 device: str = "cpu") -> Any:
    """The multiprocessing context a cell of an engine preloading `preload` starts from, on
    `device` (cell.device). Only CPU cells fork for now: a CUDA driver initialized before a
    fork is unusable after it, and no GPU run has yet shown that nothing of the preload
    initializes it (a CUDA cell spawns, as before)."""
    global _server_preload
    if not (preload and fork_server and _on_cpu(device)
            and "forkserver" in mp.get_all_start_methods()):
        return mp.get_context("spawn")
    if _server_preload is None:  # the server starts with the first cell that asks for it
        os.environ["BENCH_FORK_SERVER_PARENT"] = str(os.getpid())  # bench.sweep.server_start
        mp.get_context("forkserver").set_forkserver_preload([_FIRST, *preload, _LAST])
        _server_preload = preload
    if _server_preload != preload:  # one server per process: another set is spawned
        return mp.get_context("spawn")
    return mp.get_context("forkserver")


def _on_cpu(device: str) -> bool:
    if device == "auto":
        from bench.core.gpu import sees_gpu

        return not sees_gpu()
    return device == "cpu"


def parent_environ() -> dict[str, str]:
    """What a spawned child inherits and a forked one must be given."""
    return dict(os.environ)


def adopt(environ: dict[str, str]) -> None:
    """Take the parent's environment (first thing in the child)."""
    os.environ.clear()
    os.environ.update(environ)
