"""Serving: the same model through every engine, as clients see it, alone and several at once.

    python -m benchmarks.serving                          # SmolLM2 fp32, clients 1,2,4,8
    python -m benchmarks.serving --quant gguf-q8_0 --clients 1,4 --keep /tmp/serving

One results directory, one run: transformers and llama.cpp in process (one client: they run
one sequence at a time), then llama-cpp-python's server and vLLM's (where `make vllm` built
its environment) at every client count, all on the packaged SmolLM2-135M-Instruct, 128
prompt + 64 generated tokens, each cell its own process (each server started and stopped
by bench). Prints TTFT, per-request decode speed, aggregate throughput, inter-token latency,
peak memory of the model's processes (a server's summed peaks, and its PSS), what vLLM
reserved for its KV cache, and the CPU bench's own client used; the report
(serving.md, with the throughput-vs-latency plot) is kept with --keep. Figures, not a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.engines.openai.server import VLLM_VENV_PYTHON
from bench.report.data import engine_of
from benchmarks.common import load_line

MIB = 2**20
MODEL = ["model=smollm2-135m", "weights=packaged", "eval=none"]


def _bench(args: list[str], where: Path) -> None:
    subprocess.run([sys.executable, "-m", "bench", "-m", *MODEL, *args,
                    f"results_dir={where}/results", f"reports_dir={where}/reports",
                    "run_id=serving"], check=True, stdout=subprocess.DEVNULL)


def run(quant: str, clients: str, where: Path) -> pd.DataFrame:
    gguf = quant.startswith("gguf-")
    in_process = "engine=llamacpp" if gguf else "engine=hf,llamacpp"
    _bench([in_process, f"quant={quant}"], where)
    servers = ["llamacpp-server"] + (["vllm"] if VLLM_VENV_PYTHON.exists() and not gguf else [])
    _bench([f"engine={','.join(servers)}", f"quant={quant}",
            f"workload.concurrency={clients}"], where)
    return pd.read_parquet(where / "results")


def table(df: pd.DataFrame) -> str:
    df = df.reindex(columns=[*df.columns.drop(["host_pss_bytes", "client_cpu_s"],
                                              errors="ignore"),
                             "host_pss_bytes", "client_cpu_s"])  # rows from before them
    df["engine"] = [engine_of(row) for row in df.to_dict("records")]
    df = df.sort_values(["engine", "concurrency"])
    lines = ["| engine | clients | TTFT p50 ms | TTFT p90 ms | decode tok/s per request | "
             "throughput tok/s | ITL p50 ms | ITL p99 ms | peak host MiB | PSS MiB | load s | "
             "KV cache (server) | client CPU | status |", "|" + "---|" * 14]
    for r in df.itertuples():
        if r.status != "ok":
            lines.append(f"| {r.engine} | {int(r.concurrency or 1)} |" + " — |" * 11
                         + f" {r.status}: {r.error} |")
            continue
        kv = (f"{int(r.server_kv_cache_tokens):,} tok" if pd.notna(r.server_kv_cache_tokens)
              else "—")
        pss = f"{r.host_pss_bytes / MIB:,.0f}" if pd.notna(r.host_pss_bytes) else "—"
        client = (f"{100 * r.client_cpu_s / r.timed_s:.0f} % of a core"
                  if pd.notna(r.client_cpu_s) else "—")
        lines.append(
            f"| {r.engine} | {int(r.concurrency or 1)} | {r.ttft_ms:.1f} | {r.ttft_ms_p90:.1f} | "
            f"{r.decode_tok_s:.1f} | {r.throughput_tok_s:.1f} | {r.itl_ms_p50:.2f} | "
            f"{r.itl_ms_p99:.2f} | {r.peak_host_rss_bytes / MIB:,.0f} | {pss} | {r.load_s:.2f} "
            f"| {kv} | {client} | {r.status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quant", default="fp32", help="conf/quant scheme (fp32: every engine)")
    parser.add_argument("--clients", default="1,2,4,8", help="workload.concurrency values")
    parser.add_argument("--keep", help="keep rows and report in this directory")
    args = parser.parse_args(argv)
    print(f"# serving: SmolLM2-135M {args.quant}, clients {args.clients} ({load_line()})")
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(args.keep or scratch)
        begin = time.time()
        df = run(args.quant, args.clients, where)
        print(table(df))
        print(f"\n{len(df)} cells in {time.time() - begin:.0f} s; {load_line()}")
        if not VLLM_VENV_PYTHON.exists():
            print(f"vLLM not measured: {VLLM_VENV_PYTHON} is missing (make vllm)")


if __name__ == "__main__":
    main()
