"""Where a cell's process comes from (bench.sweep.children): a torch engine's cells fork from
a server holding torch imported; other engines' cells, or cell.fork_server=false, spawn."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from bench.engines import capabilities
from bench.engines.base import TORCH_PRELOAD
from bench.sweep import children


def _report(conn: Any, environ: dict[str, str]) -> None:
    """A child's first look at itself: what it holds imported, after taking the parent's
    environment."""
    held = "torch" in sys.modules
    children.adopt(environ)
    conn.send((held, os.environ.get("BENCH_TEST_AFTER_START"), os.getcwd(), sys.path[:3]))
    conn.close()


def _first_look(ctx: Any) -> tuple[bool, Any, str, list[str]]:
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_report, args=(send, children.parent_environ()))
    proc.start()
    send.close()
    try:
        return recv.recv()
    finally:
        proc.join(60)


def test_torch_engines_preload_torch_and_llamacpp_does_not() -> None:
    assert capabilities("hf").preload == capabilities("diffusion").preload == TORCH_PRELOAD
    assert capabilities("llamacpp").preload == () == capabilities("openai").preload


def test_which_cells_fork_and_which_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(children, "_server_preload", None)
    assert children.cell_context(()).get_start_method() == "spawn"
    assert children.cell_context(TORCH_PRELOAD, fork_server=False).get_start_method() == "spawn"
    assert children.cell_context(TORCH_PRELOAD).get_start_method() == "forkserver"
    # a CUDA cell spawns until a GPU run proves forked ones (this machine has none: auto)
    assert children.cell_context(TORCH_PRELOAD, device="cuda").get_start_method() == "spawn"
    assert children.cell_context(TORCH_PRELOAD, device="auto").get_start_method() == "forkserver"
    # one server per process: a cell asking for other libraries gets a fresh interpreter
    assert children.cell_context(("diffusers",)).get_start_method() == "spawn"
    assert children.cell_context(TORCH_PRELOAD).get_start_method() == "forkserver"


def test_a_forked_cell_holds_torch_and_the_parents_environment_as_it_is_now(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server imported torch before the cell asked; the cell still sees an environment
    variable, a directory and an import path the parent set after the server started."""
    monkeypatch.setattr(children, "_server_preload", None)
    ctx = children.cell_context(TORCH_PRELOAD)
    _first_look(ctx)  # the server is up
    monkeypatch.setenv("BENCH_TEST_AFTER_START", "seen")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    held, value, cwd, path = _first_look(ctx)
    assert held and value == "seen" and cwd == str(tmp_path) and str(tmp_path) in path
    spawned = _first_look(children.cell_context(TORCH_PRELOAD, fork_server=False))
    assert spawned[0] is False and spawned[1] == "seen"  # a fresh interpreter imports itself
