"""Quantization quality as KL divergence against the model's reference precision: the
arithmetic against a hand computation, the reference against itself (exactly 0), and other
schemes of both engines against it (more than 0), on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.engines import load_engine
from bench.engines.base import Device
from bench.sweep.plan import make_plan
from bench.tasks.text_generation.quality import ensure_reference, kl_stats, measure_quality

CPU = Device("cpu")


def test_kl_agrees_with_a_hand_computation() -> None:
    ref = np.log(np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.9, 0.05, 0.05]]))
    cell = np.log(np.array([[0.6, 0.3, 0.1], [0.25, 0.25, 0.5], [0.1, 0.1, 0.8]]))
    targets = np.array([0, 2, 2])
    stats = kl_stats(ref, cell, targets)
    # both sides as stored (float16), renormalized
    p16 = ref.astype(np.float16).astype(np.float64)
    q16 = cell.astype(np.float16).astype(np.float64)
    p16 -= np.log(np.exp(p16).sum(axis=-1, keepdims=True))
    q16 -= np.log(np.exp(q16).sum(axis=-1, keepdims=True))
    for i in range(3):
        by_hand = sum(math.exp(p16[i, v]) * (p16[i, v] - q16[i, v]) for v in range(3))
        assert stats["kl"][i] == pytest.approx(by_hand, abs=1e-12)
    assert stats["kl"][0] == pytest.approx(0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.3),
                                           abs=2e-3)
    assert stats["kl"][1] == 0.0
    assert list(stats["agree"]) == [True, True, False]
    assert stats["nll"] == pytest.approx(-q16[[0, 1, 2], [0, 2, 2]])


def test_kl_between_almost_equal_rows_is_never_negative() -> None:
    """float16 rounding leaves log-probabilities that do not sum to one; unnormalized, KL
    between a model and its F16 copy came out negative (-9e-7)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(200, 500))
    ref = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    near = logits + rng.normal(0, 1e-3, size=logits.shape)
    cell = near - np.log(np.exp(near).sum(axis=-1, keepdims=True))
    stats = kl_stats(ref, cell, np.zeros(200, dtype=int))
    assert (stats["kl"] >= 0).all() and stats["kl"].mean() > 0
    assert (kl_stats(ref, ref, np.zeros(200, dtype=int))["kl"] == 0).all()


def _quality(*args: str) -> dict:
    c = make_plan(["model=tiny-llama", "eval=offline", "eval.mmlu=null", "eval.humaneval=false",
                   "eval.mmlu_cloze=false", "eval.quality_chunks=2",
                   "eval.quality_chunk_tokens=128", *args])[0].config
    engine = load_engine(c.resolved_engine)
    engine.setup(c)
    engine.prepare(c)
    ensure_reference(c)
    loaded = engine.load(c, CPU, None, for_eval=True)
    try:
        return measure_quality(loaded, c)
    finally:
        loaded.close()


@pytest.fixture(scope="module")
def scores(cache_dir: Path) -> dict[str, dict]:
    return {name: _quality(*args) for name, args in {
        "fp32": ["quant=fp32"], "bf16": ["quant=bf16"], "llamacpp-f32": ["quant=fp32",
                                                                         "engine=llamacpp"],
        "q8_0": ["quant=gguf-q8_0"], "q2_k": ["quant=gguf-q2_k"]}.items()}


def test_the_reference_scores_exactly_zero_against_itself(scores) -> None:
    ref = scores["fp32"]
    assert ref["kld_mean"] == 0.0 and ref["kld_p99"] == 0.0 and ref["top1_agree"] == 1.0
    assert ref["ppl_delta"] == 0.0 and ref["quality_tokens"] == 2 * 63  # 128-token chunks: 63 each
    assert 0 < ref["ppl_stderr"] < ref["ppl"]
    assert "float32" in ref["quality_reference"] and "MMLU test questions" in (
        ref["quality_reference"])


def test_other_schemes_and_engines_lose_something_in_order(scores) -> None:
    for name in ("bf16", "llamacpp-f32", "q8_0", "q2_k"):
        assert scores[name]["kld_mean"] > 0, name
    # the same F32 weights in another engine differ by rounding alone
    assert scores["llamacpp-f32"]["kld_mean"] < 1e-3 < scores["q2_k"]["kld_mean"]
    assert scores["q8_0"]["kld_mean"] < scores["q2_k"]["kld_mean"]
    assert scores["q2_k"]["top1_agree"] < 1.0
    assert scores["q2_k"]["kld_p99"] >= scores["q2_k"]["kld_median"] >= 0
