"""Speed at depth (workload.depths, llama-bench's -d): the prompt timed after tokens already
in the KV cache, through transformers and llama.cpp on the tiny model; the plan's refusals;
the bound and llama.cpp's context holding the deepest depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchInputError
from bench.data.prompts import random_prompt
from bench.sweep.plan import make_plan
from bench.tasks.bounds import predict_peak
from bench.tasks.text_generation.depth import measure_depths
from tests.conftest import FAST, load_on_cpu

TINY = ["model=tiny-llama", "eval=none", *FAST]


def config(*args: str):
    return make_plan([*TINY, *args])[0].config


def test_depths_are_checked_in_one_line_before_anything_loads() -> None:
    with pytest.raises(BenchInputError, match=r"the deepest of workload.depths \(2048\) \+ "
                                              r"workload.prompt_tokens=16 \+ workload.new_"
                                              r"tokens=8 exceed the context"):
        config("workload.depths=[0,2048]")
    with pytest.raises(BenchInputError, match="workload.depths=-1 must be >= 0"):
        config("workload.depths=[-1]")
    with pytest.raises(BenchInputError, match="workload.depths is not supported by "
                                              "engine=openai"):
        config("engine=llama-server", "quant=gguf-q8_0", "workload.depths=[64]")
    with pytest.raises(BenchInputError, match="workload.depths is not read by model=tiny-vlm"):
        make_plan(["model=tiny-vlm", "eval=none", "workload.depths=[64]"])


def test_a_depth_is_part_of_the_cell_and_of_its_bound() -> None:
    plain = make_plan(TINY)[0]
    deep = make_plan([*TINY, "workload.depths=[0,256]"])[0]
    assert plain.cell_id != deep.cell_id
    assert deep.describe().endswith("prompt=16 new=8 depths=0,256")
    assert "depths" not in plain.describe()
    kv = predict_peak(deep.config).kv_cache_bytes - predict_peak(plain.config).kv_cache_bytes
    arch = plain.config.model.arch
    per_token = (2 * arch.num_hidden_layers * arch.num_key_value_heads
                 * arch.hidden_size // arch.num_attention_heads * 4)  # fp32
    assert kv == 256 * per_token


@pytest.mark.parametrize("engine", ["hf", "llamacpp"])
def test_speed_at_three_depths_through_each_engine(engine: str, cache_dir: Path) -> None:
    quant = "fp32"
    c = config(f"engine={engine}", f"quant={quant}", "workload.depths=[256,0,64]")
    loaded = load_on_cpu(c)
    try:
        prompt = random_prompt(1, 16, c.model.arch.vocab_size, 0)
        prefix = random_prompt(1, 256, c.model.arch.vocab_size, 1)
        timing = loaded.generate_at_depth(prefix, prompt, 8)
        assert len(timing.token_intervals_s) == 7 and timing.decode_s > 0
        if engine == "llamacpp":
            # llama.cpp's own counters: the prompt's 16 tokens prefilled in the timed call,
            # the depth's 256 before it, and the context holds all of them
            assert timing.engine_prefill_tokens == 16 and timing.engine_decode_tokens == 7
            assert loaded.facts()["kv_cache_cells"] >= 256 + 16 + 8
        fields = measure_depths(loaded, c.workload, c.model.arch.vocab_size, c.seed)
    finally:
        loaded.close()
    assert fields["depth_tokens"] == [0, 64, 256]
    for key in ("depth_prefill_tok_s", "depth_decode_tok_s", "depth_ttft_ms"):
        assert len(fields[key]) == 3 and all(v > 0 for v in fields[key]), (key, fields)


def test_the_greedy_tokens_after_a_prefix_are_those_of_the_whole_sequence(cache_dir) -> None:
    """transformers: generating after a cached prefix continues exactly as generating after
    the prefix and prompt as one prompt (the cache is the prefix's, not stale)."""
    import torch

    c = config("quant=fp32")
    loaded = load_on_cpu(c)
    prompt = random_prompt(1, 16, c.model.arch.vocab_size, 0)
    prefix = random_prompt(1, 64, c.model.arch.vocab_size, 1)
    whole = torch.from_numpy(np.concatenate([prefix, prompt], axis=1))
    expected = loaded.model.generate(input_ids=whole, attention_mask=torch.ones_like(whole),
                                     max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                     pad_token_id=0)[0, -6:].tolist()
    seen: list[int] = []
    original = loaded.model.generate

    def recording(**kwargs):
        out = original(**kwargs)
        seen.extend(out[0, -6:].tolist())
        return out

    loaded.model.generate = recording
    loaded.generate_at_depth(prefix, prompt, 6)
    assert seen == expected
    loaded.close()
