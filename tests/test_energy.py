"""Energy per token: the counter arithmetic on a fake powercap tree and a fake NVML counter
(wrap-around included), the split into prefill and decode, the prefill-only window of the
speed phase, the report's efficiency page; and here, where no counter exists, the reason."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from bench.core import gpu
from bench.meters import GENERATE, PREFILL, Meters
from bench.meters import energy as energy_mod
from bench.meters.energy import (
    EnergyMeter,
    NvmlEnergy,
    RaplEnergy,
    Window,
    counter_for,
    energy_fields,
)
from tests.fakes import pynvml as fake_nvml
from tests.fakes.cuda import FakeCudaDriver
from tests.report_rows import write
from tests.test_gpu import THREE_GPUS


def _zone(root: Path, name: str, label: str, uj: int, range_uj: int = 1_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(str(uj))
    (zone / "max_energy_range_uj").write_text(str(range_uj))
    return zone


def test_rapl_packages_are_summed_and_a_wrap_is_undone(tmp_path: Path) -> None:
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 900_000)
    p1 = _zone(tmp_path, "intel-rapl:1", "package-1", 100_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 5)  # a sub-zone: already in its package
    _zone(tmp_path, "intel-rapl:2", "psys", 7)  # not a package
    counter = RaplEnergy(tmp_path)
    assert counter.method == "rapl:package-0+package-1"
    assert counter.read_j() == 0.0
    (p0 / "energy_uj").write_text("50000")  # wrapped: 900,000 -> range -> 50,000
    (p1 / "energy_uj").write_text("400000")
    assert counter.read_j() == pytest.approx((100_001 + 50_000 + 300_000) / 1e6)


def test_no_powercap_tree_is_a_reason_not_a_zero(tmp_path: Path) -> None:
    counter, reason = counter_for(None, tmp_path / "absent")
    assert counter is None and "no RAPL package counter" in str(reason)
    here, why = counter_for(None)  # this VM: /sys/class/powercap is absent
    if here is None:
        assert why and why.startswith("energy not measured")


def test_the_nvml_counter_of_the_gpu_found_by_uuid(monkeypatch) -> None:
    state = copy.deepcopy(THREE_GPUS)
    state["devices"][2]["energy_mj"] = 5_000_000
    monkeypatch.setattr(fake_nvml, "STATE", state)
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    monkeypatch.setattr(gpu, "CudaDriver", FakeCudaDriver)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    counter = NvmlEnergy(gpu.device_for_ordinal(0))
    assert counter.read_j() == 5000.0
    state["devices"][2]["energy_mj"] += 1500
    assert counter.read_j() == 5001.5
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # GPU 0 has no counter in the fake
    none, reason = counter_for(gpu.device_for_ordinal(0))
    assert none is None and "unavailable" in str(reason)


def test_prefill_and_decode_are_split_by_difference_with_idle_subtracted() -> None:
    # 5 calls of 128 + 64 tokens in 10 s at 300 J; 5 prefill-only calls in 1 s at 20 J;
    # idle 10 W
    fields = energy_fields(Window(300.0, 10.0, 5, 5 * 64), Window(20.0, 1.0, 5, 5), 10.0, 1,
                           "nvml-total-energy")
    per_call = (300 - 100) / 5  # 40 J
    prefill = (20 - 10) / 5  # 2 J
    assert fields["energy_prefill_j"] == pytest.approx(prefill)
    assert fields["energy_decode_j"] == pytest.approx(per_call - prefill)
    assert fields["j_per_token"] == pytest.approx((per_call - prefill) / 63)
    assert fields["tokens_per_j"] == pytest.approx(63 / (per_call - prefill))
    assert fields["power_w"] == 30.0 and fields["idle_power_w"] == 10.0
    assert fields["energy_method"] == "nvml-total-energy, idle 10.0 W subtracted"


class _Counter:
    """A counter rising at a set power while the test says so."""

    method = "fake"

    def __init__(self) -> None:
        self.joules = 0.0

    def read_j(self) -> float:
        return self.joules


def test_the_meter_measures_both_windows_and_reports_once(monkeypatch) -> None:
    monkeypatch.setattr(energy_mod, "IDLE_S", 0.0)
    counter, sent = _Counter(), {}
    meter = Meters(sent.update, [EnergyMeter(sent.update, counter, None, 1)])
    assert meter.wants(PREFILL) and not meter.wants(GENERATE)
    meter.open(GENERATE)
    counter.joules += 100.0
    meter.close(GENERATE, 4, 4 * 16)
    assert "j_per_token" not in sent  # waits for the prefill window
    meter.open(PREFILL)
    counter.joules += 8.0
    meter.close(PREFILL, 4, 4)
    meter.stop()
    assert sent["energy_decode_j"] == pytest.approx(25.0 - 2.0)
    assert sent["j_per_token"] == pytest.approx(23.0 / 15)
    none: dict = {}
    silent = EnergyMeter(lambda **f: none.update(f), None, "energy not measured: x", 1)
    assert none == {"energy_note": "energy not measured: x"} and not silent.wants(PREFILL)


@pytest.mark.slow
def test_the_speed_phase_runs_the_prefill_window_a_meter_asks_for(cache_dir: Path) -> None:
    import torch

    from bench.engines.hf.clock import generate_once
    from bench.engines.hf.engine import load_model
    from bench.sweep.plan import make_plan
    from bench.tasks.text_generation.speed import measure_speed

    c = make_plan(["model=tiny-llama", "eval=none", "workload.prompt_tokens=16",
                   "workload.new_tokens=8", "workload.repeats=3",
                   "workload.min_duration_s=0"])[0].config
    model = load_model(c, torch.device("cpu"), False).model

    class Loaded:
        def generate(self, prompt, new_tokens):
            return generate_once(model, torch.from_numpy(prompt), new_tokens, "events")

    events: list[tuple] = []

    class Window:
        def open(self, kind):
            events.append(("open", kind))

        def close(self, kind, calls, tokens):
            events.append(("close", kind, calls, tokens))

        def wants(self, kind):
            return kind == PREFILL

    speed = measure_speed(Loaded(), c.workload, c.model.arch.vocab_size, 0, window=Window())
    assert events[0] == ("open", GENERATE) and events[1] == ("close", GENERATE,
                                                               speed.repeats, 8 * speed.repeats)
    assert events[2] == ("open", PREFILL) and events[3][:2] == ("close", PREFILL)
    assert events[3][2] >= 3 and events[3][3] == events[3][2]


def test_the_report_shows_efficiency_or_why_not(tmp_path: Path) -> None:
    from bench.report import build_report

    results, reports = tmp_path / "results", tmp_path / "reports"
    write(results, quant="fp16", decode_tok_s=40.0, tokens_per_j=2.5, j_per_token=0.4,
          energy_prefill_j=3.0, energy_decode_j=50.4, power_w=210.0, idle_power_w=60.0,
          energy_method="nvml-total-energy, idle 60.0 W subtracted")
    write(results, quant="bnb-nf4", decode_tok_s=20.0,
          energy_note="energy not measured: no readable CPU energy counter")
    build_report(results, reports)
    page = (reports / "efficiency.md").read_text()
    assert "| 2.50 " in page and "0.4000" in page and "idle 60.0 W subtracted" in page
    assert "no readable CPU energy counter" in page
    assert (reports / "figures" / "efficiency.png").exists()
