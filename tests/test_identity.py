"""Cell identity: the ids of every cell measured before the engine axis stay the same, and a
new setting joins a cell's identity only when it is not at its default."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.identity import accuracy_key, section
from bench.plan import make_plan, with_default_sweep

PINNED = Path(__file__).parent / "data" / "cell_ids_v1.json"


def ids(*args: str) -> list[str]:
    return [c.cell_id for c in make_plan(with_default_sweep(list(args)))]


@pytest.mark.parametrize("sweep", json.loads(PINNED.read_text())["sweeps"],
                         ids=lambda s: " ".join(s["args"]) or "default")
def test_ids_of_the_default_llama2_and_seeds_sweeps_are_todays(sweep: dict) -> None:
    """Generated from main before the engine axis (tests/data/cell_ids_v1.json)."""
    cells = make_plan(with_default_sweep(sweep["args"]))
    assert [(list(c.overrides), c.cell_id, accuracy_key(c.config)) for c in cells] == [
        (p["overrides"], p["cell_id"], p["accuracy_key"]) for p in sweep["cells"]]


def test_a_new_field_at_its_default_is_left_out_of_the_identity() -> None:
    @dataclasses.dataclass
    class Later:
        kept: int = 1
        added: int = 0

    assert section(Later()) == {}  # an unknown class: nothing of v1 to keep
    assert section(Later(added=3)) == {"added": 3}


def test_the_engine_is_an_axis_of_the_identity() -> None:
    hf = ids("quant=fp16")[0]
    assert ids("quant=fp16", "engine=hf") == [hf]  # auto resolves to hf: the same cell
    llama = ids("quant=fp16", "engine=llamacpp")[0]
    assert llama != hf
    assert ids("quant=fp16", "engine=llamacpp", "engine.n_gpu_layers=2")[0] not in (hf, llama)
    assert ids("quant=gguf-q4_k_m") == ids("quant=gguf-q4_k_m", "engine=llamacpp")
