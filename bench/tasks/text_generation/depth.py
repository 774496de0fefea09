"""Speed at depth, as llama-bench's -d: the workload's prompt and new tokens timed with N
tokens already in the KV cache (filled untimed before every call), for each N of
workload.depths. Attention reads the whole cache at every step, so decode slows with depth
where the model is memory-bound; the cell's own figures are depth 0. One untimed call per
depth first, then at least `repeats` timed calls (more until min_duration_s), as the
cell's own speed phase."""

from __future__ import annotations

from typing import Any

from bench.core.config import WorkloadConfig
from bench.data.prompts import random_prompt
from bench.engines.base import LoadedModel
from bench.tasks.text_generation.speed import summarize
from bench.tasks.timing import repeat_timed


def measure_depths(loaded: LoadedModel, workload: WorkloadConfig, vocab_size: int,
                   seed: int) -> dict[str, Any]:
    """Row fields: the depths, and at each one the median prefill and decode tok/s and TTFT."""
    prompt = random_prompt(workload.batch_size, workload.prompt_tokens, vocab_size, seed)
    depths = sorted(set(workload.depths or ()))
    prefill, decode, ttft = [], [], []
    for depth in depths:
        # other ids than the prompt's, the same for every engine and scheme
        prefix = random_prompt(workload.batch_size, depth, vocab_size, seed + 1)

        def call(prefix: Any = prefix) -> Any:
            return loaded.generate_at_depth(prefix, prompt, workload.new_tokens)

        call()  # untimed: the deeper cache's first use
        timings, wall = repeat_timed(workload, workload.timed_requests, call,
                                     lambda t: t.ttft_s + t.decode_s)
        result = summarize(timings, workload.batch_size, workload.prompt_tokens,
                           workload.new_tokens, wall_s=wall)
        prefill.append(result.prefill_tok_s)
        decode.append(result.decode_tok_s)
        ttft.append(result.ttft_ms)
    return {"depth_tokens": depths, "depth_prefill_tok_s": prefill,
            "depth_decode_tok_s": decode, "depth_ttft_ms": ttft}
