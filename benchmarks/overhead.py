"""Overhead: bench's isolated cell against a bare generate loop in a fresh process of its
own, same model, settings and prompt ids, alternated; the median ratio of decode tok/s.

    python -m benchmarks.overhead                         # SmolLM2-135M: hf fp32, gguf-q8_0
    python -m benchmarks.overhead --model tiny-llama --rounds 8

A round runs the bench cell (`python -m bench`, its parent, progress display and spawned
child: the real path) and the bare loop (benchmarks/bare_loop.py: imports no bench code),
in alternating order from round to round so that a drift of the machine falls on both. The
target is a median ratio ≥ 0.98 for each engine. A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass

from benchmarks.common import Spread, cell_config, load_line, one_cell

ENGINES = {"hf": "fp32", "llamacpp": "gguf-q8_0"}


@dataclass(frozen=True)
class Pair:
    bench: float
    bare: float


def bare_command(engine: str, overrides: list[str], args: argparse.Namespace) -> list[str]:
    """The bare loop's command line for the same file and settings as the bench cell."""
    cfg = cell_config(overrides)
    if engine == "hf":
        from bench.weights import checkpoint_path

        path, extra = checkpoint_path(cfg), ["--dtype", cfg.quant.dtype]
    else:
        from bench.engines.llamacpp.engine import repack
        from bench.engines.llamacpp.files import prepared_file

        path = str(prepared_file(cfg).path)
        extra = [] if repack(cfg) else ["--no-repack"]
    return [sys.executable, "-m", "benchmarks.bare_loop", engine, path, *extra,
            "--prompt", str(args.prompt), "--new", str(args.new), "--warmup",
            str(args.warmup), "--repeats", str(args.repeats), "--seed", "0",
            *(["--threads", str(cfg.cell.threads)] if cfg.cell.threads else [])]


def run_bare(command: list[str]) -> float:
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["decode_tok_s"])


def run_bench(overrides: list[str]) -> float:
    return float(one_cell(overrides).decode_tok_s)


def measure(engine: str, quant: str, args: argparse.Namespace) -> list[Pair]:
    overrides = [f"model={args.model}", f"quant={quant}", f"engine={engine}", "eval=none",
                 f"workload.prompt_tokens={args.prompt}", f"workload.new_tokens={args.new}",
                 f"workload.warmup_runs={args.warmup}", f"workload.repeats={args.repeats}",
                 f"workload.max_repeats={args.repeats}", "workload.min_duration_s=0",
                 "workload.warmup_until_steady=false", *args.extra]
    run_bench(overrides)  # prepares the files (conversion, quantization) outside the rounds
    command = bare_command(engine, overrides, args)
    pairs = []
    for i in range(args.rounds):
        if i % 2 == 0:
            tok = run_bench(overrides)
            pairs.append(Pair(tok, run_bare(command)))
        else:
            bare = run_bare(command)
            pairs.append(Pair(run_bench(overrides), bare))
        print(f"  {engine} round {i + 1}: bench {pairs[-1].bench:.2f} tok/s, bare "
              f"{pairs[-1].bare:.2f} tok/s, ratio {pairs[-1].bench / pairs[-1].bare:.3f}",
              file=sys.stderr)
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--engines", default="hf,llamacpp")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--extra", nargs="*", default=[], help="more bench overrides")
    args = parser.parse_args()
    before = load_line()
    results = {e: measure(e, ENGINES[e], args) for e in args.engines.split(",")}
    print(f"\n## Overhead: bench's isolated cell vs a bare loop\n\n{args.model}, batch 1, "
          f"prompt {args.prompt}, {args.new} new tokens, {args.warmup} warm-up and "
          f"{args.repeats} timed calls per process (median), {args.rounds} alternating rounds; "
          f"{before} before, {load_line()} after.\n")
    print("| engine | scheme | bench decode tok/s | bare decode tok/s | bench / bare |")
    print("|---|---|---|---|---|")
    for engine, pairs in results.items():
        ratio = Spread(tuple(p.bench / p.bare for p in pairs))
        print(f"| {engine} | {ENGINES[engine]} | {Spread(tuple(p.bench for p in pairs)).text(2)} "
              f"| {Spread(tuple(p.bare for p in pairs)).text(2)} | {ratio.text(3)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
