"""Generation speed, engine-independent: TTFT, prefill and decode throughput, per-token
latency percentiles, and the engine's own counters beside bench's clock.

The same random-but-fixed prompt ids for every engine (numpy, seeded), greedy, exactly
`new_tokens` tokens per call (each engine checks), warm-up calls until two in a row agree
(a cold allocator, page cache and CPU frequency make the first calls slow), then at least
`repeats` timed calls, more until `min_duration_s` was timed. The engine's handle times every token
(bench.engines.base.GenerationTiming); this module only turns calls into figures.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from bench.config import WorkloadConfig
from bench.engines.base import GenerationTiming, LoadedModel


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
    # the engine's own counters for the same calls (llama.cpp's perf context), medians
    engine_prefill_tok_s: Optional[float] = None
    engine_decode_tok_s: Optional[float] = None
    # every timed repeat, in order (the report's significance tests take these)
    decode_tok_s_samples: tuple[float, ...] = ()
    ttft_ms_samples: tuple[float, ...] = ()
    timed_s: float = 0.0
    warmup_calls: int = 0


def random_prompt(batch_size: int, prompt_tokens: int, vocab_size: int,
                  seed: int) -> np.ndarray:
    """batch x prompt_tokens token ids, the same for a seed whatever the engine."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, size=(batch_size, prompt_tokens), dtype=np.int64)


def measure_speed(loaded: LoadedModel, workload: WorkloadConfig, vocab_size: int,
                  seed: int) -> SpeedResult:
    """Warm up, then time at least `repeats` calls (more until min_duration_s is spent)."""
    prompt = random_prompt(workload.batch_size, workload.prompt_tokens, vocab_size, seed)
    warmups = warm_up(loaded, prompt, workload)
    timings: list[GenerationTiming] = []
    timed = 0.0
    while len(timings) < workload.repeats or (
            timed < workload.min_duration_s and len(timings) < workload.max_repeats):
        t = loaded.generate(prompt, workload.new_tokens)
        timings.append(t)
        timed += t.ttft_s + t.decode_s
    result = summarize(timings, workload.batch_size, workload.prompt_tokens, workload.new_tokens)
    return dataclasses.replace(result, warmup_calls=warmups)


def warm_up(loaded: LoadedModel, prompt: np.ndarray, workload: WorkloadConfig) -> int:
    """Untimed calls: `warmup_runs`, then (warmup_until_steady) more until two in a row have
    decode times within `steady_tolerance` of each other, at most `max_warmup_runs`.
    Returns the calls made."""
    calls, previous, steady = 0, None, False
    while calls < workload.warmup_runs or (
            workload.warmup_until_steady and not steady and calls < workload.max_warmup_runs):
        decode_s = loaded.generate(prompt, workload.new_tokens).decode_s
        steady = previous is not None and abs(decode_s - previous) <= (
            workload.steady_tolerance * previous)
        previous, calls = decode_s, calls + 1
    return calls


def _engine_rate(timings: Sequence[GenerationTiming], phase: str) -> Optional[float]:
    """Median tokens/s by the engine's own counters, None where it keeps none."""
    rates = []
    for t in timings:
        seconds, tokens = getattr(t, f"engine_{phase}_s"), getattr(t, f"engine_{phase}_tokens")
        if seconds is None or not tokens or seconds <= 0:
            return None
        rates.append(tokens / seconds)
    return statistics.median(rates) if rates else None


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
        engine_prefill_tok_s=_engine_rate(timings, "prefill"),
        engine_decode_tok_s=_engine_rate(timings, "decode"),
        decode_tok_s_samples=tuple(decode_tok_s),
        ttft_ms_samples=tuple(ttft_ms),
        timed_s=sum(t.ttft_s + t.decode_s for t in timings),
    )
