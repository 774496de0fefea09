"""The history page (reports/history.md): every cell's successive runs, the regressions
found among them, the cells without a verdict and why, each host's run-to-run noise and what
it lets the test catch, and the environment changes that started new baselines."""

from __future__ import annotations

import re
from typing import Sequence

from bench.report.data import Row, histories
from bench.report.fmt import MISSING, md_table, num, size
from bench.report.noise import (
    ALPHA,
    MIN_EFFECT,
    NOISE_MIN_PAIRS,
    NOISE_WINDOW,
    POWER,
    TRIM,
    RunNoise,
)
from bench.report.provenance import Sources
from bench.report.regressions import (
    EnvironmentChange,
    NoVerdict,
    Regression,
    cell_label,
    memory_metric,
)


def plot_name(row: Row) -> str:
    """File name of a cell's history plot (host sanitized for a path)."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", str(row.get("host")))
    return f"history-{row.get('cell_id')}-{host}.png"



def multi_run(rows: Sequence[Row]) -> list[list[Row]]:
    """Histories with at least two runs, ordered by cell label then host."""
    hists = [h for h in histories(rows).values() if len(h) >= 2]
    return sorted(hists, key=lambda h: (cell_label(h[-1]), str(h[-1].get("host"))))



def history_table(rows: Sequence[Row], sources: Sources, plot_dir: str,
                  plotted: set[str]) -> str:
    records = []
    for hist in multi_run(rows):
        new = hist[-1]
        speeds = [num(r.get("decode_tok_s")) if r.get("status") == "ok" else MISSING
                  for r in hist]
        mems = [size(memory_metric(r)[0]) if r.get("status") == "ok" else MISSING for r in hist]
        name = plot_name(new)
        records.append({
            "Cell": cell_label(new), "Host": str(new.get("host")), "Runs": str(len(hist)),
            "Runs (oldest → newest)": " → ".join(str(r.get("run_id")) for r in hist),
            "Status": " → ".join(str(r.get("status")) for r in hist),
            "Decode tok/s": " → ".join(speeds),
            f"Peak memory ({memory_metric(new)[1] or 'n/a'})": " → ".join(mems),
            "Plot": f"[png]({plot_dir}/{name})" if name in plotted else MISSING,
            "Source": sources.refs(reversed(hist))})
    if not records:
        return "_(no cell has more than one run yet)_"
    columns = list(dict.fromkeys(k for rec in records for k in rec))
    return md_table(records, columns)



def regression_table(regs: Sequence[Regression], sources: Sources) -> str:
    records = [{"Kind": r.kind, "Cell": cell_label(r.row), "Host": str(r.row.get("host")),
                "Previous": r.previous, "Newest": r.newest, "Change": r.change,
                "p-value": f"{r.p_value:.2g}" if r.p_value is not None else MISSING,
                "Threshold": r.threshold, "Newest run": str(r.row.get("run_id")),
                "Source": sources.ref(r.row)} for r in regs]
    if not records:
        return "No regressions: every cell's newest run is within the noise of its history."
    return md_table(records, list(records[0]))



def no_verdict_table(gaps: Sequence[NoVerdict], sources: Sources) -> str:
    records = [{"Cell": cell_label(g.row), "Host": str(g.row.get("host")), "Kind": g.kind,
                "Why no verdict": g.why, "Newest run": str(g.row.get("run_id")),
                "Source": sources.ref(g.row)} for g in gaps]
    if not records:
        return "Every cell with a history has the data for a verdict."
    return md_table(records, list(records[0]))



def noise_table(noise: Sequence[RunNoise]) -> str:
    """Each host's run-to-run noise and the smallest slowdown it lets the test catch."""
    records = [{"Host": n.host, "Device": n.device,
                "Run-to-run noise (σ of a run's level)": f"{100 * n.sigma:.1f} %",
                "Pairs of successive runs": str(n.pairs),
                **{f"Caught {100 * POWER:.0f} % of the time against {k} earlier run(s)":
                   (f"≥ {100 * n.detectable(k):.0f} % slower" if n.known
                    else f"not yet ({NOISE_MIN_PAIRS} pairs needed)") for k in (1, 3)}}
               for n in noise]
    if not records:
        return "No host has two successive runs of a cell with per-token intervals yet."
    return md_table(records, list(records[0]))



def environment_table(changes: Sequence[EnvironmentChange], sources: Sources) -> str:
    records = [{"Cell": cell_label(c.row), "Host": str(c.row.get("host")),
                "Changed since the previous run": "; ".join(c.changes),
                "Speed and memory compared with": (f"{c.compared} earlier run(s) of the same "
                                                   f"environment" if c.compared
                                                   else "nothing (a new baseline)"),
                "Previous run": str(c.previous.get("run_id")),
                "Newest run": str(c.row.get("run_id")),
                "Source": sources.refs([c.row, c.previous])} for c in changes]
    if not records:
        return "Every cell's newest run has the environment of the run before it."
    return md_table(records, list(records[0]))

LEGEND = (
    "A history is the rows of one cell_id on one host, ordered by started_at; the newest "
    "run is compared with the earlier ones. speed: a run's level is its typical per-token "
    f"decode interval (the median over its timed calls of each call's {100 * TRIM:.0f} "
    "%-trimmed mean); the newest level against the geometric mean of up to 3 earlier runs "
    "of the same environment, judged against the run-to-run noise (σ of the log level from "
    f"each cell's last {NOISE_WINDOW} pairs of successive unchanged runs, without the newest "
    "runs: the wider of the cell's own and its host and device's pooled over their cells; "
    "Student's t with the pairs as degrees of freedom); a regression when the one-sided "
    f"p < {ALPHA} and the level is at least "
    f"{100 * MIN_EFFECT:.0f} % longer. No verdict until the host and device have "
    f"{NOISE_MIN_PAIRS} pairs of successive runs; the noise table says the smallest "
    f"slowdown the test catches {100 * POWER:.0f} % of the time. Rows without "
    "intervals: per-repeat decode tok/s, "
    "one-sided Mann–Whitney U, same thresholds; rows without samples: decode tok/s below the "
    "previous median by more than max(3 × pooled stdev, 5 %). ttft: per-repeat TTFT, "
    "Mann–Whitney U, same thresholds. A cell whose data cannot reach a verdict is listed "
    "with the reason. memory: newest peak (device peak on a GPU, peak host "
    "RSS on a CPU; only like with like, same environment) above the previous maximum by more "
    "than max(2 %, 16 MiB). accuracy: MMLU below the previous scored run by more than "
    "2 × √(stderr_new² + stderr_old²). status: ok in the previous run, oom / error / timeout "
    "in the newest. Environment = device, driver, CUDA, torch, engine version and build, CPU "
    "model; a run whose environment changed is listed under Environment changes and its speed "
    "and memory are compared only with runs of its own environment. "
    "`python -m bench.report --fail-on-regression` exits 1 when the regressions table is not "
    "empty."
)
