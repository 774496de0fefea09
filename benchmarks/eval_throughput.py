"""Eval throughput: MMLU questions/s (letter and cloze forms) and HumanEval problems/s per
engine and lm-eval batch size, on the model of the default run.

    python -m benchmarks.eval_throughput
    python -m benchmarks.eval_throughput --cells smollm2-135m:fp32 --batch-sizes 1,8,32

Each figure is one cell of `python -m bench` with the offline eval preset narrowed to one
task: MMLU on `--mmlu-limit` questions per subject (57 subjects, both forms), or the first
`--humaneval-limit` HumanEval problems (64 new tokens, sandboxed); throughput = items /
eval_s (the accuracy phase's wall time; the model is already loaded). A benchmark, not a
test: it prints figures.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import load_line, sweep

TASKS = {"mmlu": ["eval.humaneval=false"], "humaneval": ["eval.mmlu=null",
                                                         "eval.mmlu_cloze=false"]}


def measure(model: str, quant: str, task: str, batch: int, args: argparse.Namespace) -> str:
    row = sweep([f"model={model}", f"quant={quant}", "eval=offline", "eval.quality=false",
                 f"eval.batch_size={batch}", f"eval.mmlu_limit={args.mmlu_limit}",
                 f"eval.humaneval_limit={args.humaneval_limit}", *TASKS[task],
                 "workload.min_duration_s=0", "workload.repeats=3"], multirun=False).iloc[0]
    if row.status != "ok":
        return f"| {model} · {quant} | {row.engine} | {task} | {batch} | {row.status}: " \
               f"{row.error} | | | |"
    n = row.mmlu_n if task == "mmlu" else row.humaneval_n
    acc = (f"letter {row.mmlu_acc:.3f}, cloze {row.mmlu_cloze_acc:.3f}" if task == "mmlu"
           else f"pass@1 {row.humaneval_pass1:.3f}")
    line = (f"| {model} · {quant} | {row.engine} | {task} | {batch} | {int(n)} | "
            f"{row.eval_s:.1f} | {n / row.eval_s:.2f} | {acc} |")
    print(line, file=sys.stderr)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="smollm2-135m:fp32,smollm2-135m:gguf-q8_0")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--mmlu-limit", type=int, default=2)
    parser.add_argument("--humaneval-limit", type=int, default=4)
    args = parser.parse_args()
    before = load_line()
    lines = []
    for pair in args.cells.split(","):
        model, quant = pair.split(":")
        for task in TASKS:
            sizes = args.batch_sizes.split(",") if task == "mmlu" else ["8"]
            lines += [measure(model, quant, task, int(b), args) for b in sizes]
    print(f"\n## Eval throughput\n\nMMLU: {args.mmlu_limit} questions per subject (57 "
          f"subjects), letter and cloze forms scored in one pass; HumanEval: the first "
          f"{args.humaneval_limit} problems, 64 new tokens, greedy, sandboxed. {before} "
          f"before, {load_line()} after.\n")
    print("| cell | engine | task | batch size | items | eval s | items/s | accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
