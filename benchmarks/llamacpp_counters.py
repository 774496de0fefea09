"""bench's clock beside llama.cpp's own perf counters, for every GGUF scheme of a model.

    python -m benchmarks.llamacpp_counters                             # tiny model, CPU
    python -m benchmarks.llamacpp_counters --model smollm2-135m --prompt 512 --new 128

Each scheme runs as a normal cell (`python -m bench`, its own process): bench times every
token from Python (perf_counter after the token's logits exist), and llama.cpp counts the
time inside its own prompt and token evaluation for the very same calls
(llama_perf_context, reset before each call). Their ratio is bench's overhead per token
(the Python loop, the argmax over the vocabulary): close to 1 for real models, further on a
tiny one whose tokens take microseconds. A benchmark, not a test: it prints figures and
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import load_line, sweep

SCHEMES = "gguf-f16,gguf-q8_0,gguf-q6_k,gguf-q5_k_m,gguf-q4_k_m,gguf-q4_0,gguf-q3_k_m,gguf-q2_k"
MIB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--quants", default=SCHEMES)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--extra", nargs="*", default=[], help="more bench overrides")
    args = parser.parse_args()
    before = load_line()
    rows = sweep([f"model={args.model}", f"quant={args.quants}", "eval=none",
                  f"workload.prompt_tokens={args.prompt}", f"workload.new_tokens={args.new}",
                  "workload.repeats=5", *args.extra])
    order = {q: i for i, q in enumerate(args.quants.split(","))}
    rows = rows.assign(order=rows["quant"].map(order)).sort_values("order")
    print(f"\n{args.model}, batch 1, prompt {args.prompt}, {args.new} new tokens, "
          f"5 timed calls (medians); {before} before, {load_line()} after\n")
    print("| scheme | status | weights MiB | host peak MiB | TTFT ms | prefill tok/s "
          "(llama.cpp) | decode tok/s | llama.cpp decode tok/s | bench / llama.cpp |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows.itertuples():
        if row.status != "ok":
            print(f"| {row.quant} | {row.status}: {row.error} |")
            continue
        ratio = row.decode_tok_s / row.engine_decode_tok_s
        print(f"| {row.quant} | ok | {row.weights_bytes / MIB:.2f} | "
              f"{row.peak_host_rss_bytes / MIB:.0f} | {row.ttft_ms:.2f} | "
              f"{row.prefill_tok_s:.0f} ({row.engine_prefill_tok_s:.0f}) | "
              f"{row.decode_tok_s:.1f} | {row.engine_decode_tok_s:.1f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
