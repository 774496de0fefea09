"""Cell identity: the ids of every cell measured before the engine axis stay the same, and a
new setting joins a cell's identity only when it is not at its default."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.results.identity import accuracy_key, section
from bench.sweep.plan import make_plan, with_default_sweep

PINNED = Path(__file__).parent / "data" / "cell_ids_v1.json"


def ids(*args: str) -> list[str]:
    return [c.cell_id for c in make_plan(with_default_sweep(list(args)))]


# eval=offline meant bench's invented MMLU-format set before the real-models issue; it now
# means the real MMLU test split: a different measurement, so those cells have new ids.
RETIRED = "eval=offline"
# +sweep=seeds without weights= meant each model's default (real) weights before the
# multimodal issue; the sweep now defaults to synthetic: its real-weight cells, planned with
# weights=real, keep their ids.
SEEDS_NOW_SYNTHETIC = "+sweep=seeds"


def _as_then(overrides: list[str]) -> list[str]:
    if SEEDS_NOW_SYNTHETIC in overrides and not any(o.startswith("weights=")
                                                    for o in overrides):
        return [*overrides, "weights=real"]
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("sweep", json.loads(PINNED.read_text())["sweeps"],
                         ids=lambda s: " ".join(s["args"]) or "default")
def test_ids_measured_before_the_engine_axis_are_todays(sweep: dict) -> None:
    """Generated from main before the engine axis (tests/data/cell_ids_v1.json): every cell,
    planned from its own overrides, keeps its cell_id and accuracy_key."""
    kept = [c for c in sweep["cells"] if RETIRED not in c["overrides"]]
    for pinned in kept:
        cell = make_plan(_as_then(pinned["overrides"]))[0]
        assert (cell.cell_id, accuracy_key(cell.config)) == (
            pinned["cell_id"], pinned["accuracy_key"]), pinned["overrides"]
    if "llama2" in " ".join(sweep["args"]) or "seeds" in " ".join(sweep["args"]):
        assert len(kept) == len(sweep["cells"]) and len(kept) in (56, 72)


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


def test_how_often_a_speed_is_timed_is_not_part_of_the_identity() -> None:
    """Warm-up, repeats and timed duration are the procedure, not the measured thing: a
    better procedure (or a quicker one in a test) keeps the cell's history; the workload
    itself does not."""
    base = ids("quant=fp16")[0]
    for override in ("workload.repeats=10", "workload.min_duration_s=0",
                     "workload.warmup_runs=3", "workload.max_repeats=200",
                     "workload.warmup_until_steady=false", "workload.steady_tolerance=0.1"):
        assert ids("quant=fp16", override) == [base], override
    assert ids("quant=fp16", "workload.prompt_tokens=256")[0] != base
