"""optimum-benchmark's measurement of one transformers model, run inside its own virtual
environment (benchmarks/.venv-optimum: `make benchmarks/.venv-optimum/.installed`), never
imported by bench. Prints one JSON line: its decode and prefill throughput, latencies and
peak RAM, and the versions it ran with.

    benchmarks/.venv-optimum/bin/python benchmarks/optimum_driver.py <checkpoint dir> \
        --dtype float32 --batch 1 --prompt 128 --new 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--log", action="store_true", help="optimum-benchmark's own log")
    parser.add_argument("--launcher", choices=("inline", "process"), default="inline")
    # Its RAM tracker (a polling process) slows the latency run that follows it on a small
    # machine (per-token p90 1.6 s against 0.05 s here): latency and memory are separate runs.
    parser.add_argument("--mode", choices=("latency", "memory"), default="latency")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum_benchmark import (
        Benchmark,
        BenchmarkConfig,
        InferenceConfig,
        InlineConfig,
        ProcessConfig,
        PyTorchConfig,
    )

    # optimum-benchmark's process launcher waits for its child in a busy loop (launchers/
    # process/launcher.py: `while ... not parent_connection.poll(): pass`), a core taken
    # from the model on a small machine: inline by default, process on request.
    launcher = ProcessConfig() if args.launcher == "process" else InlineConfig()

    config = BenchmarkConfig(
        name="peer",
        launcher=launcher,
        scenario=InferenceConfig(
            latency=args.mode == "latency", memory=args.mode == "memory",
            warmup_runs=args.warmup, iterations=args.iterations, duration=args.duration,
            input_shapes={"batch_size": args.batch, "sequence_length": args.prompt},
            generate_kwargs={"max_new_tokens": args.new, "min_new_tokens": args.new}),
        backend=PyTorchConfig(model=args.model, device="cpu", torch_dtype=args.dtype,
                              task="text-generation", library="transformers",
                              model_type="llama"),
    )
    if args.log:
        from optimum_benchmark.logging_utils import setup_logging

        setup_logging(level="INFO", prefix="OPTIMUM")
    report = Benchmark.launch(config).to_dict()
    out = {"versions": {d: metadata.version(d) for d in
                        ("optimum-benchmark", "transformers", "torch")},
           "report": report}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
