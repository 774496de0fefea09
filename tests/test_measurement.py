"""Memory and speed measurement on the real tiny model (no mocks)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.prompts import random_prompt
from bench.engines.base import Device, GenerationTiming
from bench.engines.hf.clock import generate_once
from bench.engines.hf.engine import ENGINE, load_model
from bench.engines.hf.footprint import weights_bytes
from bench.sweep.plan import make_plan
from bench.tasks.text_generation.speed import measure_speed, summarize, warm_up
from bench.weights.arch import architecture_params
from bench.weights.tiny import ensure_tiny_model
from bench.weights.tiny_cache import tiny_dir

CPU = torch.device("cpu")


def cfg(*args: str):
    return make_plan(list(args))[0].config


@pytest.fixture(scope="module")
def footprints(cache_dir: Path) -> dict[str, int]:
    out = {}
    for quant in ("fp32", "bf16", "bnb-int8", "bnb-nf4", "bnb-nf4-dq", "bnb-fp4"):
        out[quant] = weights_bytes(load_model(cfg(f"quant={quant}"), CPU, False).model)
    return out


def test_weights_bytes_order_follows_bits(footprints: dict[str, int]) -> None:
    f = footprints
    assert f["bnb-nf4-dq"] < f["bnb-nf4"] < f["bnb-int8"] < f["bf16"] < f["fp32"]
    assert f["bnb-fp4"] == f["bnb-nf4"]  # same packing, same absmax


def test_weights_bytes_matches_hand_count(footprints: dict[str, int]) -> None:
    c = cfg()
    params = architecture_params(c.model.arch)
    rotary = 2 * (c.model.arch.hidden_size // c.model.arch.num_attention_heads // 2) * 4
    assert footprints["fp32"] == params * 4 + rotary
    assert footprints["bf16"] == params * 2 + rotary


def test_get_memory_footprint_is_not_what_we_report(cache_dir: Path) -> None:
    """transformers' figure ignores double quantization; ours sees it."""
    plain = load_model(cfg("quant=bnb-nf4"), CPU, False).model
    dq = load_model(cfg("quant=bnb-nf4-dq"), CPU, False).model
    assert plain.get_memory_footprint() == dq.get_memory_footprint()
    assert weights_bytes(dq) < weights_bytes(plain)


def test_tied_weights_count_once() -> None:
    emb = torch.nn.Embedding(100, 8)
    head = torch.nn.Linear(8, 100, bias=False)
    head.weight = emb.weight
    model = torch.nn.Sequential(emb, head)
    assert weights_bytes(model) == 100 * 8 * 4


_TRANSIENT = """
import torch
from bench.meters.host_peaks import HostPeak
peak = HostPeak()
peak.start()
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
del block
print(peak.stop() - peak.current())
"""


def test_host_peak_sees_a_transient_allocation() -> None:
    # In a fresh process, as in a cell: a long-lived test process may serve the block from
    # heap it already holds resident, which no RSS figure can see.
    out = subprocess.run([sys.executable, "-c", _TRANSIENT], capture_output=True, text=True,
                         check=True).stdout
    assert int(out.strip().splitlines()[-1]) > 48 * 2**20


def test_synthetic_architecture_has_the_published_parameter_counts() -> None:
    for name in ("llama2-7b", "llama2-13b", "llama2-70b", "tiny-llama"):
        arch = cfg(f"model={name}", "weights=synthetic").model.arch
        assert architecture_params(arch) == arch.params, name


def test_synthetic_and_tiny_weights_have_the_same_footprint(cache_dir: Path) -> None:
    for quant in ("bf16", "bnb-int8", "bnb-nf4-dq"):
        tiny = load_model(cfg(f"quant={quant}"), CPU, False).model
        synth = load_model(cfg(f"quant={quant}", "weights=synthetic"), CPU, False).model
        assert weights_bytes(tiny) == weights_bytes(synth), quant
        assert type(synth.model.layers[0].mlp.up_proj) is type(tiny.model.layers[0].mlp.up_proj)


def test_tiny_model_build_is_deterministic(tmp_path: Path) -> None:
    model = cfg("model.tiny.steps=5").model  # training included, kept short
    a = ensure_tiny_model(model, tmp_path / "a")
    b = ensure_tiny_model(model, tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert a == tiny_dir(model, tmp_path / "a")


def test_generate_once_makes_exactly_the_asked_tokens(cache_dir: Path) -> None:
    model = load_model(cfg(), CPU, False).model
    ids = torch.from_numpy(random_prompt(2, 12, model.config.vocab_size, 0))
    timing = generate_once(model, ids, 9)
    assert len(timing.token_intervals_s) == 8
    assert timing.ttft_s > 0 and timing.decode_s > 0


def test_measure_speed_repeats_until_count_and_duration(cache_dir: Path) -> None:
    c = cfg()
    loaded = ENGINE.load(c, Device("cpu"), None, for_eval=False)
    workload = dataclasses.replace(c.workload, prompt_tokens=8, new_tokens=4, warmup_runs=0,
                                   repeats=3, min_duration_s=3.0, max_repeats=100000)
    result = measure_speed(loaded, workload, c.model.arch.vocab_size, 0)
    assert result.repeats > 3  # 3 calls of 8+4 tokens take far less than 3 s
    assert result.decode_tok_s > 0 and result.ttft_ms > 0
    assert result.decode_ms_p90 >= result.decode_ms_p50 > 0


class ScriptedModel:
    """A LoadedModel stand-in whose calls take the scripted decode times, in order."""

    def __init__(self, decode_s: list[float]) -> None:
        self.decode_s, self.calls = decode_s, 0

    def generate(self, prompt: object, new_tokens: int) -> GenerationTiming:
        d = self.decode_s[min(self.calls, len(self.decode_s) - 1)]
        self.calls += 1
        return GenerationTiming(ttft_s=0.001, decode_s=d, token_intervals_s=(d,))


@pytest.mark.parametrize("decode_s, until_steady, expected", [
    ([2.0, 1.5, 1.2, 1.01, 1.0, 1.0], True, 5),  # 1.01 -> 1.0 gains less than 3 %
    ([2.0, 1.0, 1.08, 1.0], True, 3),  # 1.0 -> 1.08: noise, no longer gaining
    ([2.0, 1.0, 1.0], False, 1),                 # warmup_runs only
    ([3.0, 2.0, 1.5, 1.2, 1.1, 1.05, 1.0], True, 6),  # always gaining: max_warmup_runs
])
def test_warm_up_runs_until_a_call_stops_gaining(decode_s: list[float], until_steady: bool,
                                            expected: int) -> None:
    workload = dataclasses.replace(cfg().workload, warmup_runs=1, max_warmup_runs=6,
                                   steady_tolerance=0.03, warmup_until_steady=until_steady)
    model = ScriptedModel(decode_s)
    assert warm_up(model, np.zeros((1, 4), dtype=np.int64), workload) == expected  # type: ignore[arg-type]
    assert model.calls == expected


def test_every_timed_repeat_is_kept_in_order() -> None:
    timings = [GenerationTiming(ttft_s=t, decode_s=d, token_intervals_s=(d / 3,) * 3)
               for t, d in ((0.010, 0.3), (0.030, 0.9), (0.020, 0.6))]
    s = summarize(timings, batch_size=2, prompt_tokens=100, new_tokens=4)
    assert s.decode_tok_s_samples == pytest.approx((20.0, 2 * 3 / 0.9, 10.0))
    assert s.ttft_ms_samples == pytest.approx((10.0, 30.0, 20.0))
    assert s.timed_s == pytest.approx(0.06 + 1.8)


def test_summarize_uses_medians_and_decode_excludes_the_first_token() -> None:
    timings = [GenerationTiming(ttft_s=t, decode_s=d, token_intervals_s=(d / 3,) * 3)
               for t, d in ((0.010, 0.3), (0.020, 0.6), (0.030, 0.9))]
    s = summarize(timings, batch_size=2, prompt_tokens=100, new_tokens=4)
    assert s.ttft_ms == pytest.approx(20.0)
    assert s.prefill_tok_s == pytest.approx(2 * 100 / 0.020)
    assert s.decode_tok_s == pytest.approx(2 * 3 / 0.6)
    assert s.decode_ms_p50 == pytest.approx(200.0)
    assert s.repeats == 3


def test_a_short_answer_is_rated_over_the_tokens_it_has_and_counted() -> None:
    """A server that stopped early: its rate counts generated tokens only, the shortfall is
    recorded, and throughput is every generated token over the wall time."""
    timings = [GenerationTiming(ttft_s=0.01, decode_s=0.3, token_intervals_s=(0.1,) * 3,
                                tokens=4, e2e_s=0.32),
               GenerationTiming(ttft_s=0.01, decode_s=0.2, token_intervals_s=(0.1,) * 2,
                                tokens=3, e2e_s=0.22)]
    s = summarize(timings, batch_size=1, prompt_tokens=16, new_tokens=4, wall_s=0.5,
                  errors=("HTTP 500",))
    assert s.decode_tok_s_samples == pytest.approx((10.0, 10.0))
    assert s.tokens_short == 1 and s.request_errors == 1 and s.first_error == "HTTP 500"
    assert s.throughput_tok_s == pytest.approx(7 / 0.5)
    assert s.requests_per_s == pytest.approx(2 / 0.5)
    assert s.e2e_ms_p50 == pytest.approx(270.0)
    assert s.decode_ms_p50 == pytest.approx(100.0) and s.itl_ms_p99 == pytest.approx(100.0)
