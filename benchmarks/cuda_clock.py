"""The CUDA event clock against the synchronizing clock, same cell, alternated.

    python -m benchmarks.cuda_clock                            # tiny-llama fp16 on the GPU
    python -m benchmarks.cuda_clock --model llama2-7b --weights synthetic --rounds 6

transformers' token clock records a CUDA event per token and synchronizes once per call
(workload.cuda_clock=events, the default); the older clock synchronizes at every token
(`sync`). Both run as normal cells, alternating; the figures should agree within noise, the
events a little faster where the per-token synchronize stalled the launch queue. Without a
CUDA device there is nothing to compare: it says so and exits 0. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import Spread, load_line, one_cell


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--quant", default="fp16")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("cuda_clock: no CUDA device here: nothing to compare")
        return 0
    base = [f"model={args.model}", f"quant={args.quant}", "eval=none", "cell.device=cuda",
            *([f"weights={args.weights}"] if args.weights else [])]
    before = load_line()
    figures: dict[str, list[tuple[float, float]]] = {"events": [], "sync": []}
    for i in range(args.rounds):
        for clock in (("events", "sync") if i % 2 == 0 else ("sync", "events")):
            row = one_cell([*base, f"workload.cuda_clock={clock}"])
            figures[clock].append((row.decode_tok_s, row.ttft_ms))
    ratio = Spread(tuple(e[0] / s[0] for e, s in zip(figures["events"], figures["sync"],
                                                    strict=True)))
    print(f"\n## CUDA clock: events vs synchronize per token\n\n{args.model} {args.quant} on "
          f"{torch.cuda.get_device_name()}, {args.rounds} alternating rounds; {before}.\n")
    print("| clock | decode tok/s | TTFT ms |\n|---|---|---|")
    for clock, rows in figures.items():
        print(f"| {clock} | {Spread(tuple(r[0] for r in rows)).text(2)} | "
              f"{Spread(tuple(r[1] for r in rows)).text(2)} |")
    print(f"\nevents / sync decode: {ratio.text(3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
