"""Repeatability: the same cell measured N times, each a fresh `python -m bench` run; the
coefficient of variation of decode tok/s, TTFT and peak memory across runs, and the spread
inside each run (stdev / median of its timed repeats).

    python -m benchmarks.repeatability                      # SmolLM2-135M: hf fp32, gguf-q8_0
    python -m benchmarks.repeatability --runs 5 --cells smollm2-135m:fp32

The default workload procedure is used as `python -m bench` runs it (warm-up until steady,
at least 5 timed calls and 10 s timed). The target is CV ≤ 3 % for decode tok/s on a quiet
machine; each run's contention (other processes' cores, load average) is printed beside it,
since a busy neighbour is the usual reason a figure moves. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from benchmarks.common import Spread, load_line, one_cell

MIB = 2**20


def measure(model: str, quant: str, runs: int, extra: list[str]) -> pd.DataFrame:
    rows = []
    for i in range(runs):
        row = one_cell([f"model={model}", f"quant={quant}", "eval=none", *extra])
        rows.append(row)
        cores = row.foreign_cpu_s / row.timed_s
        print(f"  {model} {quant} run {i + 1}: decode {row.decode_tok_s:.2f} tok/s "
              f"(spread {100 * row.decode_tok_s_stdev / row.decode_tok_s:.1f} %, "
              f"{row.repeats} repeats after {row.warmup_calls} warm-ups), TTFT "
              f"{row.ttft_ms:.1f} ms, peak {row.peak_host_rss_bytes / MIB:.0f} MiB; other "
              f"processes {cores:.2f} cores, load {row.load_avg:.2f}", file=sys.stderr)
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="smollm2-135m:fp32,smollm2-135m:gguf-q8_0",
                        help="model:quant pairs, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--extra", nargs="*", default=[], help="more bench overrides")
    args = parser.parse_args()
    before = load_line()
    results = {}
    for pair in args.cells.split(","):
        model, quant = pair.split(":")
        results[(model, quant)] = measure(model, quant, args.runs, args.extra)
    print(f"\n## Repeatability: the same cell, {args.runs} fresh runs\n\nDefault workload "
          f"(batch 1, prompt 128, 64 new tokens) and timing procedure; {before} before, "
          f"{load_line()} after. CV = stdev / mean across runs; spread = stdev / median of "
          f"one run's timed repeats.\n")
    print("| cell | decode tok/s across runs | CV decode | CV TTFT | CV peak memory | "
          "spread inside a run (median) | timed calls per run | other processes' cores |")
    print("|---|---|---|---|---|---|---|---|")
    for (model, quant), df in results.items():
        decode = Spread(tuple(df.decode_tok_s))
        ttft = Spread(tuple(df.ttft_ms))
        peak = Spread(tuple(float(x) for x in df.peak_host_rss_bytes))
        spread = Spread(tuple(df.decode_tok_s_stdev / df.decode_tok_s))
        cores = Spread(tuple(df.foreign_cpu_s / df.timed_s))
        print(f"| {model} · {quant} | {decode.text(2)} | {100 * decode.cv:.1f} % | "
              f"{100 * ttft.cv:.1f} % | {100 * peak.cv:.2f} % | {100 * spread.median:.1f} % | "
              f"{int(df.repeats.median())} | {cores.median:.2f} (max {max(cores.values):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
