"""A bare generate loop in a process of its own: the yardstick bench's isolated cell is held
against (benchmarks/overhead.py). It imports no bench code; it loads the model as bench does
(same file, dtype, threads, context) and times the same calls the same way, and prints one
JSON line with every timed repeat.

    python -m benchmarks.bare_loop hf <checkpoint dir> --dtype float32
    python -m benchmarks.bare_loop llamacpp <file.gguf> --no-repack

Speed follows bench's definitions: TTFT = start of the call to the first token's logits,
decode tok/s = batch × (new − 1) / (last token − first token).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np

Timing = tuple[float, float]  # (ttft_s, decode_s)


def prompt_ids(batch: int, tokens: int, vocab: int, seed: int) -> np.ndarray:
    """bench.tasks.text_generation.speed.random_prompt's ids (numpy's generator, the same seed)."""
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, tokens), dtype=np.int64)


def hf_loop(args: argparse.Namespace) -> tuple[Callable[[], Timing], int]:
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.path, dtype=getattr(torch, args.dtype),
                                                 device_map=args.device_map)
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.from_numpy(prompt_ids(args.batch, args.prompt, vocab, args.seed))
    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor,
                     scores: torch.FloatTensor) -> torch.FloatTensor:
            stamps.append(time.perf_counter())
            return scores

    processors = LogitsProcessorList([Stamp()])

    def call() -> Timing:
        stamps.clear()
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                       max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                       num_beams=1, use_cache=True, pad_token_id=0,
                       logits_processor=processors)
        end = time.perf_counter()
        return stamps[0] - start, end - stamps[0]

    return call, vocab


def llamacpp_loop(args: argparse.Namespace) -> tuple[Callable[[], Timing], int]:
    import llama_cpp

    threads = args.threads or len(os.sched_getaffinity(0))
    default_params = llama_cpp.llama_cpp.llama_model_default_params

    def params() -> object:  # --no-repack, as bench sets it where AMX kernels crash
        out = default_params()
        out.use_extra_bufts = not args.no_repack
        return out

    llama_cpp.llama_cpp.llama_model_default_params = params
    llm = llama_cpp.Llama(model_path=args.path, n_ctx=args.prompt + args.new,
                          n_threads=threads, n_threads_batch=threads, seed=args.seed,
                          verbose=False)
    vocab = llm.n_vocab()
    ids = [int(t) for t in prompt_ids(1, args.prompt, vocab, args.seed)[0]]

    def call() -> Timing:
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        first = time.perf_counter()
        for _ in range(args.new - 1):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return first - start, time.perf_counter() - first

    return call, vocab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=("hf", "llamacpp"))
    parser.add_argument("path")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-repack", action="store_true")
    parser.add_argument("--device-map", default="cpu", help="from_pretrained's device_map "
                        "(bench pins every module to the one device); 'none' for none")
    args = parser.parse_args()
    args.device_map = None if args.device_map == "none" else {"": args.device_map}
    if args.engine == "llamacpp" and args.batch != 1:
        parser.error("the llama.cpp loop runs batch 1, as bench's llama.cpp engine does")
    call, _ = (hf_loop if args.engine == "hf" else llamacpp_loop)(args)
    for _ in range(args.warmup):
        call()
    timings = [call() for _ in range(args.repeats)]
    decode = [args.batch * (args.new - 1) / d for _, d in timings]
    print(json.dumps({"decode_tok_s": statistics.median(decode),
                      "ttft_ms": statistics.median(t * 1e3 for t, _ in timings),
                      "decode_tok_s_samples": decode}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
