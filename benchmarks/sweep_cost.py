"""Sweep cost: where the default sweep's wall time goes, per cell and phase.

    python -m benchmarks.sweep_cost                    # the embedded default, as `make run`
    python -m benchmarks.sweep_cost --args eval=none   # more overrides for `python -m bench`

Runs `python -m bench` (report included, into a scratch directory) and splits its wall time
with the phase times every row records (`phase_s`, the parent's clock): process start
(spawn to the child's first word), imports and engine setup, prepare (its own process:
conversion, quantization, the quality reference; cached after the first run), load,
speed, eval, quality, and the parent's own share (row writing, hand-over between cells).
Fixed overhead per cell = start + setup + the parent's share; target under 10 s. A sweep in
two stages (accuracy last) adds the accuracy stage's own start, setup and load
(accuracy_*), and says when the first report was written. A benchmark, not a test: it
prints figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import pandas as pd

from benchmarks.common import load_line

GIB = 2**30
PHASES = ("start", "setup", "prepare", "load", "speed", "quality", "accuracy_start",
          "accuracy_setup", "accuracy_load", "eval")


def run(extra: list[str], keep: str | None) -> tuple[pd.DataFrame, float, float, list[float]]:
    """Rows of one default run, its wall time, the time before the first cell began, and
    when each report was written (seconds from the start)."""
    with tempfile.TemporaryDirectory() as scratch:
        where = keep or scratch
        begin = time.time()
        reports = []
        with subprocess.Popen([sys.executable, "-m", "bench", *extra,
                               f"results_dir={where}/results", f"reports_dir={where}/reports",
                               "run_id=cost"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith("bench: wrote") and line.rstrip().endswith(
                        "compatibility.md"):
                    reports.append(time.time() - begin)
        if proc.returncode:
            raise SystemExit(f"python -m bench exited {proc.returncode}")
        wall = time.time() - begin
        df = pd.read_parquet(f"{where}/results")
    first = df.started_at.min().timestamp() - begin
    return df, wall, first, reports


def _fig(value: object, fmt: str) -> str:
    return "—" if value is None or pd.isna(value) else format(value, fmt)


def figures(df: pd.DataFrame) -> None:
    """What the run measured, a row per cell: the numbers the README and notes quote."""
    print("\n| cell | engine | weights GiB | host peak GiB | decode tok/s (spread) | TTFT ms | "
          "MMLU letter | MMLU cloze | n | PPL | mean KL | top-1 |\n" + "|---" * 12 + "|")
    for row in df.itertuples():
        spread = (row.decode_tok_s_stdev / row.decode_tok_s
                  if row.decode_tok_s and not pd.isna(row.decode_tok_s_stdev) else None)
        print(f"| {row.model} · {row.quant} | {row.engine} | "
              f"{_fig(row.weights_bytes / GIB if row.weights_bytes else None, '.3f')} | "
              f"{_fig(row.peak_host_rss_bytes / GIB if row.peak_host_rss_bytes else None, '.2f')}"
              f" | {_fig(row.decode_tok_s, '.1f')} ({_fig(spread, '.1%')}) | "
              f"{_fig(row.ttft_ms, '.0f')} | {_fig(row.mmlu_acc, '.3f')} | "
              f"{_fig(row.mmlu_cloze_acc, '.3f')} | {_fig(row.mmlu_n, 'd')} | "
              f"{_fig(row.ppl, '.3f')} | {_fig(row.kld_mean, '.4f')} | "
              f"{_fig(row.top1_agree, '.1%')} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--args", nargs="*", default=[], help="overrides for python -m bench")
    parser.add_argument("--keep", default=None,
                        help="write results/ and reports/ under this directory, not a scratch one")
    args = parser.parse_args()
    before = load_line()
    df, wall, first, reports = run(args.args, args.keep)
    df = df.sort_values("started_at")
    print(f"\n## Sweep cost: `python -m bench {' '.join(args.args)}`\n\n{len(df)} cells, wall "
          f"{wall:.0f} s ({wall / 60:.1f} min); the report written at "
          f"{', '.join(f'{t:.0f} s' for t in reports) or 'no time'}; {before} before, "
          f"{load_line()} after. Seconds per phase as the parent saw them.\n")
    print("| cell | status | " + " | ".join(PHASES) + " | parent | cell total | of which "
          "quantize_s | fixed overhead |")
    print("|---" * (len(PHASES) + 6) + "|")
    totals = dict.fromkeys(PHASES, 0.0)
    parent_total = 0.0
    for row in df.itertuples():
        phases = dict(row.phase_s) if row.phase_s is not None else {}
        staged = "accuracy_load" in phases  # its two stages are apart: no parent share
        cell = (sum(phases.values()) if staged
                else (row.finished_at - row.started_at).total_seconds())
        parent = 0.0 if staged else cell - sum(phases.values())
        parent_total += parent
        for name in PHASES:
            totals[name] += phases.get(name, 0.0)
        fixed = phases.get("start", 0.0) + phases.get("setup", 0.0) + parent
        quantize = "—" if pd.isna(row.quantize_s) else f"{row.quantize_s:.1f}"
        print(f"| {row.model} · {row.quant} | {row.status} | "
              + " | ".join(f"{phases[p]:.1f}" if p in phases else "—" for p in PHASES)
              + f" | {parent:.1f} | {cell:.1f} | {quantize} | {fixed:.1f} |")
    cells = (df.finished_at.max() - df.started_at.min()).total_seconds()
    print("| **all cells** | | " + " | ".join(f"{totals[p]:.0f}" for p in PHASES)
          + f" | {parent_total:.0f} | {cells:.0f} | | |")
    print(f"\nBefore the first cell (interpreter, Hydra, plan): {first:.1f} s; after the last "
          f"(last row, report): {wall - first - cells:.1f} s.")
    figures(df)
    return 0


if __name__ == "__main__":
    sys.exit(main())
