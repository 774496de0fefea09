"""Regression detector power: how often the regressions page catches a known slowdown, and
how often it flags an unchanged run, on real samples recorded on this machine.

    python -m benchmarks.regression_power --record 8           # record 8 nights, then analyse
    python -m benchmarks.regression_power                      # analyse the recorded nights

Recording runs each cell once per "night" (`python -m bench ... eval=none`, the default
workload and timing procedure, its own run_id night-NN), cells interleaved, into --nights.
The analysis takes one night as the newest run and k = 1, 2, 3 other nights as its history
(every combination, or --combos of them drawn at random), slows the newest run by 0, 3, 5,
10, 20 and 30 % (every per-token interval and every per-repeat decode time stretched by
that much, as a real slowdown would), and asks the report's own check
(bench.report.regressions.speed_regression) whether it is a regression. The
run-to-run noise is taken as the report takes it, from successive nights (the wider of
the cell's own and the host's pooled over cells) — here all recorded nights but the newest
one (the nights are minutes apart, so their order carries nothing). It does so twice: on
the rows as stored (the level of per-token intervals against that noise) and on the same
rows without their intervals (the per-repeat Mann–Whitney U that rows written before them
get). Unchanged (0 %) flags are false alarms; the others are catches. A benchmark, not a
test.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import load_line

NIGHTS_DIR = Path(__file__).parent / "data" / "nights"
SLOWDOWNS = (0.0, 0.03, 0.05, 0.10, 0.20, 0.30)
HISTORY = (1, 2, 3)
Row = dict[str, Any]


def record(nights: int, cells: Sequence[str], out: Path) -> None:
    """Each cell once per night, interleaved, each night a run_id of its own."""
    done = {p.name for p in out.glob("night-*")} if out.exists() else set()
    start = len(done) + 1
    for night in range(start, start + nights):
        for pair in cells:
            model, quant = pair.split(":")
            args = [sys.executable, "-m", "bench", f"model={model}", f"quant={quant}",
                    "eval=none", f"results_dir={out}", f"run_id=night-{night:02d}",
                    "report=false"]
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ})
            print(f"  night {night}: {model} {quant} recorded ({load_line()})", file=sys.stderr)


def slowed(row: Row, by: float) -> Row:
    """The row as if its decode had been `by` slower: every interval and decode time longer."""
    out = dict(row)
    out["token_intervals_ms"] = [x * (1 + by) for x in row["token_intervals_ms"]]
    out["decode_tok_s_samples"] = [x / (1 + by) for x in row["decode_tok_s_samples"]]
    out["decode_tok_s"] = row["decode_tok_s"] / (1 + by)
    return out


def without_intervals(row: Row) -> Row:
    return {**row, "token_intervals_ms": None, "token_intervals_per_call": None}


@dataclass(frozen=True)
class Rates:
    detector: str
    earlier: int
    trials: int
    flagged: dict[float, int]  # slowdown -> how many trials were flagged

    def cells(self) -> list[str]:
        return [f"{100 * self.flagged[s] / self.trials:.0f} %" for s in SLOWDOWNS]


def trials(nights: list[Row], k: int, combos: int, rng: random.Random) -> list[tuple[Row,
                                                                                    list[Row]]]:
    """(newest, history of k other nights in their order) pairs, at most `combos` of them."""
    out = [(new, [nights[i] for i in earlier])
           for n, new in enumerate(nights)
           for earlier in itertools.combinations([i for i in range(len(nights)) if i != n], k)]
    return out if len(out) <= combos else rng.sample(out, combos)


def noise_without(cells: dict[str, list[Row]], night: str) -> dict[tuple[str, str], Any]:
    """The hosts' run-to-run noise from every cell's nights but `night`."""
    from bench.report.noise import run_noise

    return run_noise([r for r in rows if r["run_id"] != night] for rows in cells.values())


def power(rows: list[Row], cells: dict[str, list[Row]], combos: int) -> list[Rates]:
    from bench.report.noise import cell_noise, noise_key
    from bench.report.regressions import speed_regression

    rng = random.Random(0)
    noise = {r["run_id"]: cell_noise([o for o in rows if o["run_id"] != r["run_id"]],
                                     noise_without(cells, r["run_id"]).get(noise_key(r)))
             for r in rows}
    out = []
    for k in HISTORY:
        pairs = trials(rows, k, combos, rng)
        for detector, view in (("level against the run-to-run noise", lambda r: r),
                               ("per-repeat Mann–Whitney U", without_intervals)):
            flagged = {s: sum(speed_regression([view(r) for r in history],
                                               view(slowed(new, s)),
                                               noise[new["run_id"]]) is not None
                              for new, history in pairs) for s in SLOWDOWNS}
            out.append(Rates(detector, k, len(pairs), flagged))
    return out


def table(rates: Sequence[Rates]) -> str:
    head = ("| detector | earlier nights | trials | unchanged (false flags) | "
            + " | ".join(f"{100 * s:.0f} % slower" for s in SLOWDOWNS[1:]) + " |")
    lines = [head, "|" + "---|" * (4 + len(SLOWDOWNS) - 1)]
    for r in rates:
        lines.append(f"| {r.detector} | {r.earlier} | {r.trials} | " + " | ".join(r.cells())
                     + " |")
    return "\n".join(lines)


def nights_of(results: Path) -> dict[str, list[Row]]:
    """Each cell's ok rows with per-token intervals, in night order, as the report reads
    them."""
    from bench.report.data import load_rows

    cells: dict[str, list[Row]] = {}
    for row in sorted(load_rows(results), key=lambda r: str(r["run_id"])):
        if row["status"] == "ok" and row.get("token_intervals_ms"):
            label = f"{row['model']} · {row['engine']} · {row['quant']}"
            cells.setdefault(label, []).append(row)
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=Path, default=NIGHTS_DIR)
    parser.add_argument("--record", type=int, default=0, help="record this many nights first")
    parser.add_argument("--cells", default="smollm2-135m:fp32,smollm2-135m:gguf-q8_0")
    parser.add_argument("--combos", type=int, default=200,
                        help="at most this many (newest, history) trials per history length")
    args = parser.parse_args()
    if args.record:
        record(args.record, args.cells.split(","), args.nights)
    cells = nights_of(args.nights)
    from bench.report.noise import POWER, cell_noise, run_noise

    for noise in run_noise(cells.values()).values():
        print(f"run-to-run noise on {noise.host} ({noise.device}): σ = "
              f"{100 * noise.sigma:.1f} % over {noise.pairs} pairs of successive nights; "
              + ", ".join(f"caught {100 * POWER:.0f} % of the time against {k} earlier: ≥ "
                          f"{100 * noise.detectable(k):.0f} % slower" for k in HISTORY))
    for cell, rows in cells.items():
        decode = [r["decode_tok_s"] for r in rows]
        calls = sorted(len(r["token_intervals_per_call"]) for r in rows)
        loads = [r["load_avg"] for r in rows if r.get("load_avg") is not None]
        own = cell_noise(rows, None)
        print(f"\n### {cell}: {len(rows)} nights\n\nits own run-to-run noise σ = "
              f"{100 * own.sigma:.1f} % over its last {own.pairs} pairs; decode tok/s per night "
              f"{min(decode):.1f}–{max(decode):.1f}; timed calls per night "
              f"{calls[0]}–{calls[-1]}; load average {min(loads, default=0):.2f}–"
              f"{max(loads, default=0):.2f}; analysed with {load_line()}.\n")
        print(table(power(rows, cells, args.combos)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
