"""bench against llama.cpp's own tools on the same GGUF files, one machine
(`python -m benchmarks.peers llamacpp`).

Quality: bench's llamacpp cells (eval: quality only) give PPL, mean KL, its 99th percentile and
top-1 agreement against bench's reference (transformers, the model's own float32 weights).
`llama-perplexity` scores the same text: first the float32 GGUF of the same weights with
`--kl-divergence-base` (its logits saved), then every scheme's file with `--kl-divergence`:
"Mean PPL(Q)", "Mean KLD", "99.0% KLD" and "Same top p". The text is bench's quality text,
written to a file that llama-perplexity tokenizes itself into the same 512-token chunks; both
score the positions after each chunk's first half. llama-perplexity runs with bench's llama.cpp
settings: one chunk per batch (`-b 512`; its default, 2,048, puts four chunks in one batch)
and flash attention off (llama-cpp-python's default; llama.cpp's own is auto): either
changes the rounding, and PPL by ~0.3 % on a K-quant file.

Speed: bench's llamacpp cell at `--prompt` / `--new` tokens against `llama-bench -p <prompt>
-n <new> -d 0,<prompt>`: its prompt test from an empty context (bench's TTFT) and its
generation test after a context of the prompt's length (bench's decode follows the prompt),
with the same threads, batch (512 / 512), KV-cache type (`--kv-cache`: bench's
engine.kv_cache, llama-bench's -ctk / -ctv) and flash attention (off: llama-cpp-python's
default; on for a quantized V cache, as bench sets it), alternating for `--rounds` rounds;
each side's median and their ratio. `--depth D` adds bench's decode at workload.depths=[D]
against llama-bench's generation test after D + prompt tokens. The tools
are built from the engine's own llama.cpp sources on first use (bench.engines.llamacpp.tools),
and their build record is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.common import Spread, cell_config, one_cell, sweep

QUALITY_ONLY = ["eval=offline", "eval.mmlu=null", "eval.humaneval=false",
                "eval.mmlu_cloze=false"]
_FLOAT = r"([-+0-9.eE]+)"
PATTERNS = {"ppl": rf"Mean PPL\(Q\)\s*:\s*{_FLOAT}", "kld_mean": rf"Mean\s+KLD:\s*{_FLOAT}",
            "kld_p99": rf"99\.0%\s+KLD:\s*{_FLOAT}", "top1_agree": rf"Same top p:\s*{_FLOAT}"}
BASE_PPL = rf"Final estimate: PPL = {_FLOAT}"


def parse_perplexity(output: str) -> dict[str, float]:
    """llama-perplexity's KL-divergence summary (top-1 as a share, not a percentage)."""
    out = {}
    for key, pattern in PATTERNS.items():
        found = re.search(pattern, output)
        if found:
            out[key] = float(found.group(1)) / (100 if key == "top1_agree" else 1)
    return out


def parse_llama_bench(output: str, prompt_tokens: int) -> dict[str, float]:
    """llama-bench's JSON: tokens/s of its prompt test from an empty context (prefill, as
    bench's TTFT), of its generation test after the prompt's length (decode after the
    prompt, as bench's decode) and of each deeper one (`decode@<depth>`: bench's decode at
    workload.depths=[depth], which follows depth + prompt tokens)."""
    out: dict[str, float] = {}
    tests = json.loads(output)
    prompt = [t for t in tests if t.get("n_gen", 0) == 0 and t.get("n_depth", 0) == 0]
    if prompt:
        out["prefill"] = float(prompt[0]["avg_ts"])
    for test in tests:
        if test.get("n_prompt", 0) == 0 and test.get("n_depth", 0) >= prompt_tokens:
            depth = int(test["n_depth"]) - prompt_tokens
            out["decode" if depth == 0 else f"decode@{depth}"] = float(test["avg_ts"])
    return out


def _tool(name: str) -> Path:
    from bench.engines.llamacpp.tools import ensure_tool

    return ensure_tool(cell_config(["model=tiny-llama", "eval=none"]).resolved_cache_dir, name)


def _run(command: Sequence[str]) -> str:
    done = subprocess.run(list(command), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout)[-600:]}")
    return done.stdout + done.stderr


def _gguf(overrides: Sequence[str]) -> Path:
    from bench.engines.llamacpp.files import prepared_file

    return prepared_file(cell_config(overrides)).path


def quality(model: str, schemes: Sequence[str], threads: int) -> list[str]:
    """bench's quality columns beside llama-perplexity's on the same files and text."""
    common = [f"model={model}", "engine=llamacpp", *QUALITY_ONLY, f"cell.threads={threads}"]
    rows = sweep([*common, f"quant={','.join(['fp32', *schemes])}"]).set_index("quant")
    if (rows.status != "ok").any():
        raise RuntimeError(f"bench cells failed: {rows[rows.status != 'ok'].error.tolist()}")
    cfg = cell_config([*common, "quant=fp32"])
    from bench.data.text import text

    lines = []
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        text_file, base = Path(scratch) / "text.txt", Path(scratch) / "base.kld"
        text_file.write_text(text(cfg.resolved_cache_dir), encoding="utf-8")
        size, chunks = cfg.eval.quality_chunk_tokens, cfg.eval.quality_chunks
        perplexity = str(_tool("llama-perplexity"))
        same = ["-c", str(size), "--chunks", str(chunks), "-t", str(threads), "-b", str(size),
                "-fa", "off"]  # bench's llama.cpp settings: one chunk per batch, no FA
        said = _run([perplexity, "-m", str(_gguf([*common, "quant=fp32"])), "-f",
                     str(text_file), *same, "--kl-divergence-base", str(base)])
        base_ppl = float(re.search(BASE_PPL, said).group(1))  # type: ignore[union-attr]
        lines.append(f"| fp32 (F32 GGUF; bench: its llamacpp cell) | {rows.loc['fp32', 'ppl']:.4f}"
                     f" | {base_ppl:.4f} | {rows.loc['fp32', 'ppl'] / base_ppl:.5f} | | | |")
        for scheme in schemes:
            theirs = parse_perplexity(_run([
                perplexity, "-m", str(_gguf([*common, f"quant={scheme}"])), *same,
                "--kl-divergence-base", str(base), "--kl-divergence"]))
            ours = rows.loc[scheme]
            lines.append(
                f"| {scheme} ({_what(ours)}) | "
                f"{ours.ppl:.4f} | {theirs['ppl']:.4f} | {ours.ppl / theirs['ppl']:.5f} | "
                f"{ours.kld_mean:.5f} vs {theirs['kld_mean']:.5f} "
                f"({ours.kld_mean / theirs['kld_mean']:.3f}) | "
                f"{ours.kld_p99:.4f} vs {theirs['kld_p99']:.4f} | "
                f"{100 * ours.top1_agree:.2f} vs {100 * theirs['top1_agree']:.2f} % |")
    return lines


def _what(row) -> str:  # noqa: ANN001 (a pandas row)
    """The scheme's fallback note, else that the file holds its own type."""
    fallback = row.get("quant_fallback")
    return fallback if isinstance(fallback, str) and fallback else "its own type"


def llama_bench_cache_args(kv_cache: Optional[str]) -> list[str]:
    """llama-bench's -ctk / -ctv and -fa for bench's engine.kv_cache (flash attention on
    where bench turns it on: a quantized V cache)."""
    from bench.engines.llamacpp import LlamaCppSettings

    settings = LlamaCppSettings(kv_cache=kv_cache)
    key, value = settings.kv_cache_pair()
    return ["-ctk", key, "-ctv", value, "-fa", "on" if settings.flash_attention() else "off"]


def speed(model: str, scheme: str, prompt: int, new: int, rounds: int, threads: int,
          kv_cache: Optional[str] = None, depth: Optional[int] = None) -> list[str]:
    """bench's llamacpp cell and llama-bench, alternating, at the same shape, threads and KV
    type, with a decode at `depth` on both sides when asked."""
    overrides = [f"model={model}", "engine=llamacpp", f"quant={scheme}", "eval=none",
                 f"workload.prompt_tokens={prompt}", f"workload.new_tokens={new}",
                 f"cell.threads={threads}",
                 *([f"engine.kv_cache={kv_cache}"] if kv_cache else []),
                 *([f"workload.depths=[{depth}]"] if depth else [])]
    one_cell(overrides)  # the file, built outside the rounds
    depths = ",".join(str(d) for d in (0, prompt, *([depth + prompt] if depth else [])))
    command = [str(_tool("llama-bench")), "-m", str(_gguf(overrides)), "-p", str(prompt),
               "-n", str(new), "-d", depths, "-t", str(threads), "-r", "3",
               "-b", "512", "-ub", "512", *llama_bench_cache_args(kv_cache), "-o", "json"]
    figures = ["prefill", "decode", *([f"decode@{depth}"] if depth else [])]
    ours: dict[str, list[float]] = {f: [] for f in figures}
    theirs: dict[str, list[float]] = {f: [] for f in figures}
    for i in range(rounds):
        for who in (("bench", "llama-bench") if i % 2 == 0 else ("llama-bench", "bench")):
            if who == "bench":
                row = one_cell(overrides)
                ours["prefill"].append(prompt / (row.ttft_ms / 1e3))
                ours["decode"].append(row.decode_tok_s)
                if depth:
                    ours[f"decode@{depth}"].append(float(row.depth_decode_tok_s[0]))
            else:
                found = parse_llama_bench(_json_part(_run(command)), prompt)
                for figure in figures:
                    theirs[figure].append(found[figure])
        print(f"  round {i + 1}: decode bench {ours['decode'][-1]:.1f}, llama-bench "
              f"{theirs['decode'][-1]:.1f} tok/s", file=sys.stderr)
    names = {"prefill": f"prefill {prompt} tok/s", "decode": f"decode {new} after {prompt} tok/s",
             f"decode@{depth}": f"decode {new} after {depth} + {prompt} tok/s"}
    lines = []
    for figure in figures:
        ratio = Spread(tuple(a / b for a, b in zip(ours[figure], theirs[figure], strict=True)))
        lines.append(f"| {names[figure]} | {Spread(tuple(ours[figure])).text(1)} | "
                     f"{Spread(tuple(theirs[figure])).text(1)} | {ratio.text(3)} |")
    return lines


def _json_part(output: str) -> str:
    """llama-bench's JSON array, without the log lines around it."""
    return output[output.index("["): output.rindex("]") + 1]


def main(args: argparse.Namespace) -> list[str]:
    from bench.engines.llamacpp.tools import build_record

    threads = args.threads
    out = ["", f"## bench beside llama.cpp's own tools ({args.model}, {threads} threads)", ""]
    if "quality" in args.parts:
        out += ["| scheme (what the file holds) | bench PPL | llama-perplexity PPL | ratio | "
                "mean KL: bench vs llama.cpp (ratio) | KL p99 | top-1 agreement |",
                "|---|---|---|---|---|---|---|"]
        out += quality(args.model, args.schemes, threads)
    if "speed" in args.parts:
        out += ["", f"Speed, {args.speed_scheme}, KV cache {args.kv_cache or 'f16'}: bench's "
                f"llamacpp cell and llama-bench alternating, {args.rounds} rounds", "",
                "| figure | bench | llama-bench | bench / llama-bench |", "|---|---|---|---|"]
        out += speed(args.model, args.speed_scheme, args.prompt, args.new, args.rounds,
                     threads, args.kv_cache, args.depth)
    record = build_record(cell_config(["model=tiny-llama", "eval=none"]).resolved_cache_dir)
    out += ["", f"llama.cpp tools: {json.dumps(record)}"]
    return out
