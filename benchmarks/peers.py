"""Peers side by side: bench beside optimum-benchmark (transformers) and beside llama.cpp's
own perf counters (llama.cpp engine), same model, dtype, batch, prompt length and new tokens.

    make benchmarks/.venv-optimum/.installed     # optimum-benchmark in its own environment
    python -m benchmarks.peers                   # SmolLM2-135M, fp32 and GGUF Q8_0
    python -m benchmarks.peers --rounds 5 --prompt 256 --new 128
    python -m benchmarks.peers llamacpp          # against llama-perplexity and llama-bench
                                                 # (benchmarks/llamacpp_peers.py)

transformers: bench's cell (`python -m bench`, its default timing procedure) and
optimum-benchmark's inference scenario (benchmarks/optimum_driver.py, inline launcher, its
per-token latency tracker) alternate for `--rounds` rounds; a separate optimum run takes its
peak RAM. What each measures: decode tok/s = batch × (new − 1) / (end of generate − first
token) in both (bench: median of its repeats; optimum: from the mean decode latency); TTFT =
start of generate to the first token's logits in both (optimum calls it prefill latency);
memory: bench's peak RSS is the kernel's high-water mark (VmHWM) over load and the timed
calls, optimum's max_ram is a psutil poll (decimal MB) over load and one generate. Prompts
are random ids in both, of the same length (optimum draws its own).

llama.cpp: one bench cell; llama.cpp counts its own prompt and token evaluation time for the
very same calls (llama_perf_context); the ratio is bench's own cost per token (the Python
loop and argmax over the vocabulary). A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Spread, cell_config, load_line, one_cell

OPTIMUM_PYTHON = Path(__file__).parent / ".venv-optimum" / "bin" / "python"
DRIVER = Path(__file__).parent / "optimum_driver.py"
MB, MIB = 1e6, 2**20


def optimum(path: str, dtype: str, args: argparse.Namespace, mode: str) -> dict:
    # In a scratch directory: optimum-benchmark writes its benchmark.log into the cwd.
    with tempfile.TemporaryDirectory(prefix="optimum-") as scratch:
        out = subprocess.run([str(OPTIMUM_PYTHON), str(DRIVER.resolve()), path, "--dtype",
                              dtype, "--prompt", str(args.prompt), "--new", str(args.new),
                              "--mode", mode], check=True, capture_output=True, text=True,
                             cwd=scratch).stdout
    return json.loads(out.strip().splitlines()[-1])


def transformers_side(args: argparse.Namespace) -> list[str]:
    overrides = [f"model={args.model}", "quant=fp32", "engine=hf", "eval=none",
                 f"workload.prompt_tokens={args.prompt}", f"workload.new_tokens={args.new}"]
    one_cell(overrides)  # converts / builds what the cell needs, outside the rounds
    from bench.weights import checkpoint_path

    path = str(Path(checkpoint_path(cell_config(overrides))).resolve())
    bench_tok, bench_ttft, opt_tok, opt_ttft = [], [], [], []
    versions: dict = {}
    bench_peak = 0.0
    for i in range(args.rounds):
        order = ("bench", "optimum") if i % 2 == 0 else ("optimum", "bench")
        for who in order:
            if who == "bench":
                row = one_cell(overrides)
                bench_tok.append(row.decode_tok_s)
                bench_ttft.append(row.ttft_ms)
                bench_peak = max(bench_peak, row.peak_host_rss_bytes)
                engine_version = row.engine_version
            else:
                out = optimum(path, "float32", args, "latency")
                versions = out["versions"]
                report = out["report"]
                opt_tok.append(report["decode"]["throughput"]["value"])
                opt_ttft.append(1e3 * report["prefill"]["latency"]["p50"])
        print(f"  round {i + 1}: bench {bench_tok[-1]:.2f} tok/s, optimum-benchmark "
              f"{opt_tok[-1]:.2f} tok/s", file=sys.stderr)
    memory = optimum(path, "float32", args, "memory")["report"]
    opt_peak = max(v["memory"]["max_ram"] for v in memory.values() if v and v.get("memory"))
    ratio = Spread(tuple(b / o for b, o in zip(bench_tok, opt_tok, strict=True)))
    return [
        f"| transformers fp32 | bench (transformers {engine_version}) | "
        f"{Spread(tuple(bench_tok)).text(2)} | {statistics.median(bench_ttft):.1f} | "
        f"{bench_peak / MIB:.0f} MiB (VmHWM) | |",
        f"| | optimum-benchmark {versions.get('optimum-benchmark')} (transformers "
        f"{versions.get('transformers')}) | {Spread(tuple(opt_tok)).text(2)} | "
        f"{statistics.median(opt_ttft):.1f} | {opt_peak * MB / MIB:.0f} MiB (polled) | "
        f"bench / optimum decode {ratio.text(3)}; TTFT "
        f"{statistics.median(bench_ttft) / statistics.median(opt_ttft):.3f} |",
    ]


def llamacpp_side(args: argparse.Namespace) -> list[str]:
    rows = [one_cell([f"model={args.model}", "quant=gguf-q8_0", "eval=none",
                       f"workload.prompt_tokens={args.prompt}",
                       f"workload.new_tokens={args.new}"]) for _ in range(args.rounds)]
    tok = Spread(tuple(r.decode_tok_s for r in rows))
    own = Spread(tuple(r.engine_decode_tok_s for r in rows))
    ratio = Spread(tuple(r.decode_tok_s / r.engine_decode_tok_s for r in rows))
    ttft = statistics.median(r.ttft_ms for r in rows)
    own_ttft = statistics.median(1e3 * args.prompt / r.engine_prefill_tok_s for r in rows)
    peak = statistics.median(r.peak_host_rss_bytes for r in rows) / MIB
    return [
        f"| llama.cpp gguf-q8_0 | bench (llama-cpp-python {rows[0].engine_version}) | "
        f"{tok.text(2)} | {ttft:.1f} | {peak:.0f} MiB (VmHWM) | |",
        f"| | llama.cpp's perf counters, same calls | {own.text(2)} | {own_ttft:.1f} "
        f"(prompt eval) | — | bench / llama.cpp decode {ratio.text(3)} |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", nargs="?", choices=("optimum", "llamacpp"), default="optimum",
                        help="optimum: optimum-benchmark and llama.cpp's perf counters; "
                             "llamacpp: llama-perplexity and llama-bench on the same files")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=None,
                        help="prompt tokens (default: 128; llamacpp: 512, as llama-bench)")
    parser.add_argument("--new", type=int, default=None,
                        help="new tokens (default: 64; llamacpp: 128, as llama-bench)")
    parser.add_argument("--schemes", nargs="+",
                        default=["gguf-q8_0", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_k_m",
                                 "gguf-q4_0", "gguf-q3_k_m", "gguf-q2_k"])
    parser.add_argument("--speed-scheme", default="gguf-q8_0")
    parser.add_argument("--kv-cache", default=None,
                        help="llamacpp speed: the KV type on both sides (engine.kv_cache; "
                             "llama-bench -ctk / -ctv), e.g. q8_0 or q8_0/q4_0")
    parser.add_argument("--depth", type=int, default=None,
                        help="llamacpp speed: also decode with this many tokens in the cache "
                             "first (bench's workload.depths; llama-bench -d)")
    parser.add_argument("--parts", nargs="+", choices=("quality", "speed"),
                        default=["quality", "speed"], help="llamacpp: which comparisons")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    if args.side == "llamacpp":
        from benchmarks import llamacpp_peers

        args.prompt, args.new = args.prompt or 512, args.new or 128
        before = load_line()
        lines = llamacpp_peers.main(args)
        print("\n".join(lines))
        print(f"\n{before} before, {load_line()} after.")
        return 0
    args.prompt, args.new = args.prompt or 128, args.new or 64
    if not OPTIMUM_PYTHON.exists():
        parser.error(f"{OPTIMUM_PYTHON} is missing: make benchmarks/.venv-optimum/.installed")
    before = load_line()
    lines = [*transformers_side(args), *llamacpp_side(args)]
    print(f"\n## Peers side by side\n\n{args.model}, batch 1, prompt {args.prompt}, "
          f"{args.new} new tokens, greedy, CPU; {args.rounds} rounds (bench and "
          f"optimum-benchmark alternating); {before} before, {load_line()} after.\n")
    print("| engine · scheme | measured by | decode tok/s | TTFT ms (median) | peak memory | "
          "ratio |")
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
