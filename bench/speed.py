"""Generation speed: TTFT, prefill and decode throughput, per-token latency percentiles.

Random prompt ids of the configured length, greedy, min_new_tokens == max_new_tokens (and
checked), warm-up calls, then at least `repeats` timed calls. A logits processor stamps
the time at every generated token: the first stamp ends prefill (TTFT), the rest are
decode. On CUDA the stamp synchronizes first, so it is the time the logits exist.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from bench.config import WorkloadConfig


class _TokenClock(LogitsProcessor):
    """Records perf_counter() each time generate() produces a token's logits."""

    def __init__(self, device: torch.device) -> None:
        self.stamps: list[float] = []
        self._sync = device.type == "cuda"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._sync:
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return scores


@dataclass(frozen=True)
class GenerationTiming:
    ttft_s: float
    decode_s: float
    token_intervals_s: tuple[float, ...]


@dataclass(frozen=True)
class SpeedResult:
    ttft_ms: float
    ttft_ms_stdev: float
    prefill_tok_s: float
    decode_tok_s: float
    decode_tok_s_stdev: float
    decode_ms_p50: float
    decode_ms_p90: float
    repeats: int


def random_prompt(batch_size: int, prompt_tokens: int, vocab_size: int, seed: int,
                  device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, prompt_tokens), generator=gen)
    return ids.to(device)


def generate_once(model: torch.nn.Module, input_ids: torch.Tensor,
                  new_tokens: int) -> GenerationTiming:
    """One greedy generate call of exactly `new_tokens` tokens, timed per token."""
    clock = _TokenClock(input_ids.device)
    attention_mask = torch.ones_like(input_ids)
    if input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, num_beams=1, use_cache=True,
                         pad_token_id=0, logits_processor=LogitsProcessorList([clock]))
    if input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    made = out.shape[1] - input_ids.shape[1]
    if made != new_tokens or len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generate made {made} tokens ({len(clock.stamps)} logits calls); "
                           f"the workload asks for exactly {new_tokens}")
    stamps = clock.stamps
    return GenerationTiming(ttft_s=stamps[0] - start, decode_s=end - stamps[0],
                            token_intervals_s=tuple(np.diff(stamps).tolist()))


def measure_speed(model: torch.nn.Module, workload: WorkloadConfig, vocab_size: int,
                  device: torch.device, seed: int) -> SpeedResult:
    """Warm up, then time at least `repeats` calls (more until min_duration_s is spent)."""
    input_ids = random_prompt(workload.batch_size, workload.prompt_tokens, vocab_size, seed,
                              device)
    for _ in range(workload.warmup_runs):
        generate_once(model, input_ids, workload.new_tokens)
    timings: list[GenerationTiming] = []
    timed = 0.0
    while len(timings) < workload.repeats or (
            timed < workload.min_duration_s and len(timings) < workload.max_repeats):
        t = generate_once(model, input_ids, workload.new_tokens)
        timings.append(t)
        timed += t.ttft_s + t.decode_s
    return summarize(timings, workload.batch_size, workload.prompt_tokens, workload.new_tokens)


def summarize(timings: list[GenerationTiming], batch_size: int, prompt_tokens: int,
              new_tokens: int) -> SpeedResult:
    """Medians over repeats (robust to a stray slow call), with their spread."""
    ttft_ms = [t.ttft_s * 1e3 for t in timings]
    decode_tok_s = [batch_size * (new_tokens - 1) / t.decode_s for t in timings]
    intervals_ms = np.array([i * 1e3 for t in timings for i in t.token_intervals_s])
    ttft_med = statistics.median(ttft_ms)
    return SpeedResult(
        ttft_ms=ttft_med,
        ttft_ms_stdev=statistics.stdev(ttft_ms) if len(ttft_ms) > 1 else 0.0,
        prefill_tok_s=batch_size * prompt_tokens / (ttft_med / 1e3),
        decode_tok_s=statistics.median(decode_tok_s),
        decode_tok_s_stdev=statistics.stdev(decode_tok_s) if len(decode_tok_s) > 1 else 0.0,
        decode_ms_p50=float(np.percentile(intervals_ms, 50)),
        decode_ms_p90=float(np.percentile(intervals_ms, 90)),
        repeats=len(timings),
    )
