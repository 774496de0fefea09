"""Figures for true-architecture cells with synthetic weights: measured footprint and speed
beside bench.tasks.bounds's lower bound, on whatever device this machine has.

    python -m benchmarks.synthetic_footprint                       # llama2-7b x fp16, bnb-nf4
    python -m benchmarks.synthetic_footprint --models llama2-7b,falcon-7b --quants bnb-nf4 \
        --prompt 512 --new 128

Each cell runs through `python -m bench` (its own process, the real measurement path) into
a scratch results directory; the script prints one line per cell. It is a benchmark, not a
test: the figures depend on the machine, and nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from bench.sweep.plan import make_plan
from bench.tasks.bounds import predict_peak
from benchmarks.common import sweep

GIB = 2**30


def _gib(value: object) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value) / GIB:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama2-7b")
    parser.add_argument("--quants", default="fp16,bnb-nf4")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--new", type=int, default=8)
    parser.add_argument("--extra", nargs="*", default=[], help="more bench overrides")
    args = parser.parse_args()
    overrides = ["weights=synthetic", "eval=none", f"workload.prompt_tokens={args.prompt}",
                 f"workload.new_tokens={args.new}", "workload.repeats=3", *args.extra]
    rows = sweep([f"model={args.models}", f"quant={args.quants}", *overrides]).sort_values(
        ["model", "quant"])
    print(f"\n{'model':<12} {'quant':<9} {'status':<8} {'predicted>=':>11} {'weights':>8} "
          f"{'host peak':>9} {'dev peak':>8} {'load s':>7} {'ttft ms':>8} {'decode t/s':>10}"
          f"   (GiB; batch 1, prompt {args.prompt}, new {args.new})")
    for row in rows.itertuples():
        cfg = make_plan([f"model={row.model}", f"quant={row.quant}", *overrides])[0].config
        bound = predict_peak(cfg).peak_bytes
        print(f"{row.model:<12} {row.quant:<9} {row.status:<8} {_gib(bound):>11} "
              f"{_gib(row.weights_bytes):>8} {_gib(row.peak_host_rss_bytes):>9} "
              f"{_gib(row.peak_device_bytes):>8} {row.load_s:>7.1f} {row.ttft_ms:>8.0f} "
              f"{row.decode_tok_s:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
