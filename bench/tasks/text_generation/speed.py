"""Generation speed, engine-independent: TTFT, prefill and decode throughput, per-token
latency percentiles, and the engine's own counters beside bench's clock; under concurrent
clients (servers), aggregate throughput and the latency each request saw.

The same random-but-fixed prompt ids for every engine (numpy, seeded), greedy, exactly
`new_tokens` tokens per call (each engine checks), warm-up calls until a call stops gaining
on the one before (a cold allocator, page cache and CPU frequency make the first calls
slow), then at least `repeats` timed calls, more until `min_duration_s` was timed. The
engine's handle times every token (bench.engines.base.GenerationTiming); this module only
turns calls into figures. With `workload.concurrency` N > 1, one untimed round of N
requests at once follows the warm-up, then N clients send requests back-to-back (closed
loop, as vLLM's and GuideLLM's fixed-concurrency runs): throughput is every generated
token over the wall time from the first request sent to the last one done, so the drain at
the end counts against it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from bench.core.config import WorkloadConfig
from bench.data.prompts import random_prompt
from bench.engines.base import GenerationTiming, LoadedModel
from bench.meters.windows import GENERATE, PREFILL, NoWindow, TimedWindow
from bench.tasks.timing import repeat_timed


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
    # the same counters summed over the timed calls, raw (prompt_n / prompt_ms, predicted_n /
    # predicted_ms: llama-server's `timings` fields)
    engine_timings: Optional[dict[str, float]] = None
    # every timed repeat, in order (the report's significance tests take these)
    decode_tok_s_samples: tuple[float, ...] = ()
    ttft_ms_samples: tuple[float, ...] = ()
    # every timed call's per-token intervals (ms), calls in order, and how many each gave
    token_intervals_ms: tuple[float, ...] = ()
    token_intervals_per_call: tuple[int, ...] = ()
    timed_s: float = 0.0
    warmup_calls: int = 0
    # what a client sees, over every timed request (servers under concurrent load)
    concurrency: int = 1
    requests: int = 0
    request_errors: int = 0
    first_error: Optional[str] = None
    throughput_tok_s: float = 0.0  # generated tokens / wall time of the timed phase
    requests_per_s: float = 0.0
    ttft_ms_p90: float = 0.0
    itl_ms_p99: float = 0.0  # p50 and p90 of the same gaps are decode_ms_p50 / _p90
    e2e_ms_p50: float = 0.0
    e2e_ms_p90: float = 0.0
    tokens_short: int = 0  # tokens asked for and not generated, over all requests


PREFILL_SECONDS = 1.0  # prefill-only calls run at least this long, for an energy counter


def measure_speed(loaded: LoadedModel, workload: WorkloadConfig, vocab_size: int,
                  seed: int, window: Optional[TimedWindow] = None) -> SpeedResult:
    """Warm up, then time at least `repeats` calls (more until min_duration_s is spent), or
    under `concurrency` > 1, that many clients at once. `window` is opened right before the
    first timed call and closed right after the last."""
    window = window or NoWindow()
    prompt = random_prompt(workload.batch_size, workload.prompt_tokens, vocab_size, seed)
    warmups = warm_up(loaded, prompt, workload)
    if workload.concurrency > 1:
        n = workload.concurrency
        loaded.generate_concurrently(workload.new_tokens, n, 1, 0.0, 1)  # untimed round
        window.open(GENERATE)
        run = loaded.generate_concurrently(workload.new_tokens, n, workload.timed_requests,
                                           workload.min_duration_s, workload.max_repeats)
        window.close(GENERATE, len(run.timings), _tokens(run.timings, workload))
        if not run.timings:
            raise RuntimeError(f"every request failed at concurrency {n}: {run.errors[0]}")
        timings, wall, errors = list(run.timings), run.wall_s, run.errors
        warmups += 1
    else:
        errors = ()
        window.open(GENERATE)
        timings, wall = repeat_timed(workload, workload.timed_requests,
                                     lambda: loaded.generate(prompt, workload.new_tokens),
                                     lambda t: t.ttft_s + t.decode_s)
        window.close(GENERATE, len(timings), _tokens(timings, workload))
        if window.wants(PREFILL):
            _prefill_window(loaded, prompt, workload, window)
    result = summarize(timings, workload.batch_size, workload.prompt_tokens,
                       workload.new_tokens, wall_s=wall, errors=errors)
    return dataclasses.replace(result, warmup_calls=warmups, concurrency=workload.concurrency)


def _tokens(timings: Sequence[GenerationTiming], workload: WorkloadConfig) -> int:
    """Tokens the calls generated (every sequence of the batch)."""
    return workload.batch_size * sum(workload.new_tokens if t.tokens is None else t.tokens
                                     for t in timings)


def _prefill_window(loaded: LoadedModel, prompt: np.ndarray, workload: WorkloadConfig,
                    window: TimedWindow) -> None:
    """Prefill-only calls (one token each), as many as the timed calls and at least a second
    of them: what a meter subtracts to split prefill from decode."""
    window.open(PREFILL)
    start, calls = time.perf_counter(), 0
    while calls < workload.timed_requests or (
            time.perf_counter() - start < PREFILL_SECONDS and calls < 50 * workload.max_repeats):
        loaded.generate(prompt, 1)
        calls += 1
    window.close(PREFILL, calls, workload.batch_size * calls)


def warm_up(loaded: LoadedModel, prompt: np.ndarray, workload: WorkloadConfig) -> int:
    """Untimed calls: `warmup_runs`, then (warmup_until_steady) more until a call's decode
    is no more than `steady_tolerance` faster than the call before it, at most
    `max_warmup_runs`. Warm-up only ever makes calls faster (caches, allocator, lazy
    initialisation), so the trend has ended when a call stops gaining; asking two calls to
    agree instead would, on a machine whose calls scatter by more than the tolerance, spend
    every cell's maximum. Returns the calls made."""
    calls, previous, steady = 0, None, False
    while calls < workload.warmup_runs or (
            workload.warmup_until_steady and not steady and calls < workload.max_warmup_runs):
        decode_s = loaded.generate(prompt, workload.new_tokens).decode_s
        steady = previous is not None and decode_s >= (1 - workload.steady_tolerance) * previous
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


def _engine_totals(timings: Sequence[GenerationTiming]) -> Optional[dict[str, float]]:
    """The engine's own counters summed over the calls, in llama-server's names; None
    unless every call has them."""
    totals = {"prompt_n": 0.0, "prompt_ms": 0.0, "predicted_n": 0.0, "predicted_ms": 0.0}
    for t in timings:
        counts = (t.engine_prefill_tokens, t.engine_prefill_s, t.engine_decode_tokens,
                  t.engine_decode_s)
        if any(c is None for c in counts) or not timings:
            return None
        totals["prompt_n"] += counts[0]
        totals["prompt_ms"] += 1e3 * counts[1]
        totals["predicted_n"] += counts[2]
        totals["predicted_ms"] += 1e3 * counts[3]
    return totals if timings else None


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarize(timings: list[GenerationTiming], batch_size: int, prompt_tokens: int,
              new_tokens: int, wall_s: Optional[float] = None,
              errors: Sequence[str] = ()) -> SpeedResult:
    """Medians over repeats (robust to a stray slow call), with their spread. A request that
    generated fewer tokens than asked is rated over the tokens it did generate."""
    ttft_ms = [t.ttft_s * 1e3 for t in timings]
    tokens = [new_tokens if t.tokens is None else t.tokens for t in timings]
    decode_tok_s = [batch_size * (n - 1) / t.decode_s
                    for t, n in zip(timings, tokens, strict=True) if n > 1 and t.decode_s > 0]
    if not decode_tok_s:
        raise RuntimeError("no timed call generated two tokens or more: no decode speed")
    intervals_ms = np.array([i * 1e3 for t in timings for i in t.token_intervals_s])
    e2e_ms = [(t.e2e_s if t.e2e_s is not None else t.ttft_s + t.decode_s) * 1e3
              for t in timings]
    ttft_med = statistics.median(ttft_ms)
    busy_s = sum(t.ttft_s + t.decode_s for t in timings)
    wall = wall_s if wall_s else busy_s
    return SpeedResult(
        ttft_ms=ttft_med,
        ttft_ms_stdev=statistics.stdev(ttft_ms) if len(ttft_ms) > 1 else 0.0,
        prefill_tok_s=batch_size * prompt_tokens / (ttft_med / 1e3),
        decode_tok_s=statistics.median(decode_tok_s),
        decode_tok_s_stdev=statistics.stdev(decode_tok_s) if len(decode_tok_s) > 1 else 0.0,
        decode_ms_p50=_percentile(intervals_ms, 50),
        decode_ms_p90=_percentile(intervals_ms, 90),
        repeats=len(timings),
        engine_prefill_tok_s=_engine_rate(timings, "prefill"),
        engine_decode_tok_s=_engine_rate(timings, "decode"),
        engine_timings=_engine_totals(timings),
        decode_tok_s_samples=tuple(decode_tok_s),
        ttft_ms_samples=tuple(ttft_ms),
        token_intervals_ms=tuple(round(float(i), 4) for i in intervals_ms),
        token_intervals_per_call=tuple(len(t.token_intervals_s) for t in timings),
        timed_s=wall,
        requests=len(timings),
        request_errors=len(errors),
        first_error=errors[0] if errors else None,
        throughput_tok_s=batch_size * sum(tokens) / wall,
        requests_per_s=len(timings) / wall,
        ttft_ms_p90=_percentile(ttft_ms, 90),
        itl_ms_p99=_percentile(intervals_ms, 99),
        e2e_ms_p50=_percentile(e2e_ms, 50),
        e2e_ms_p90=_percentile(e2e_ms, 90),
        tokens_short=batch_size * sum(new_tokens - n for n in tokens),
    )


def speed_fields(speed: SpeedResult) -> dict[str, Any]:
    """The speed columns, and the serving ones: what the clients saw (one client for
    in-process engines)."""
    return {"ttft_ms": speed.ttft_ms, "ttft_ms_stdev": speed.ttft_ms_stdev,
            "prefill_tok_s": speed.prefill_tok_s, "decode_tok_s": speed.decode_tok_s,
            "decode_tok_s_stdev": speed.decode_tok_s_stdev,
            "decode_ms_p50": speed.decode_ms_p50, "decode_ms_p90": speed.decode_ms_p90,
            "repeats": speed.repeats, "engine_prefill_tok_s": speed.engine_prefill_tok_s,
            "engine_decode_tok_s": speed.engine_decode_tok_s,
            "engine_timings": speed.engine_timings,
            "decode_tok_s_samples": list(speed.decode_tok_s_samples),
            "ttft_ms_samples": list(speed.ttft_ms_samples), "timed_s": speed.timed_s,
            "token_intervals_ms": list(speed.token_intervals_ms),
            "token_intervals_per_call": list(speed.token_intervals_per_call),
            "warmup_calls": speed.warmup_calls,
            "concurrency": speed.concurrency, "requests": speed.requests,
            "throughput_tok_s": speed.throughput_tok_s, "requests_per_s": speed.requests_per_s,
            "ttft_ms_p90": speed.ttft_ms_p90, "itl_ms_p50": speed.decode_ms_p50,
            "itl_ms_p90": speed.decode_ms_p90, "itl_ms_p99": speed.itl_ms_p99,
            "e2e_ms_p50": speed.e2e_ms_p50, "e2e_ms_p90": speed.e2e_ms_p90,
            "request_errors": speed.request_errors, "request_error": speed.first_error,
            "tokens_short": speed.tokens_short}
