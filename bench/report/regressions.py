"""Table 6, history and regressions: successive runs of one cell on one host, newest vs before.

A regression must exceed the noise measured for that cell (asv's step detection, simplified
to what one nightly needs to act on): decode speed below the previous median by more than
max(3 × pooled stdev, 5 %), memory above the previous maximum by more than max(2 %, 16 MiB),
MMLU below the previous run by more than 2 × the combined standard error, or a status that
went from ok to oom / error / timeout.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from bench.report.data import Row, device_peak, engine_of, histories, is_gpu, workload_label
from bench.report.fmt import MISSING, md_table, num, signed, size
from bench.report.provenance import Sources
from bench.schema import STATUS_FAILED

MIB = 2**20
SPEED_REL = 0.05
SPEED_SIGMAS = 3.0
MEMORY_REL = 0.02
MEMORY_ABS = 16 * MIB
ACC_SIGMAS = 2.0


@dataclass(frozen=True)
class Regression:
    kind: str  # speed | memory | accuracy | status
    row: Row  # the newest row
    previous: str
    newest: str
    change: str
    threshold: str

    def line(self) -> str:
        """The one line `--fail-on-regression` prints."""
        return (f"regression: {self.kind} {cell_label(self.row)} on host {self.row.get('host')}"
                f" (cell {self.row.get('cell_id')}, run {self.row.get('run_id')}): "
                f"{self.previous} -> {self.newest} ({self.change}; threshold {self.threshold})")


def cell_label(row: Row) -> str:
    return (f"{row.get('model')} · {engine_of(row)} · {row.get('quant')} · "
            f"{row.get('gpu_class')} · {workload_label(row)}")


def memory_metric(row: Row) -> tuple[Optional[int], str]:
    """The memory figure a history compares: device peak on a GPU, peak host RSS on a CPU."""
    if is_gpu(row):
        value, source = device_peak(row)
        return value, {"nvml": "device peak", "reserved": "allocator reserved peak"}.get(
            source, "")
    value = row.get("peak_host_rss_bytes")
    return (int(value), "host RSS") if value is not None else (None, "")


def _ok(rows: Sequence[Row], column: str) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok" and r.get(column) is not None]


def _comparable(prev: Sequence[Row], new: Row, column: str) -> list[Row]:
    """Earlier ok rows with `column`, or none when the newest row has nothing to compare."""
    if new.get("status") != "ok" or new.get(column) is None:
        return []
    return _ok(prev, column)


def speed_regression(prev: Sequence[Row], new: Row) -> Optional[Regression]:
    before = _comparable(prev, new, "decode_tok_s")
    if not before:
        return None
    median = statistics.median(r["decode_tok_s"] for r in before)
    stdevs = [r["decode_tok_s_stdev"] for r in [*before, new]
              if r.get("decode_tok_s_stdev") is not None]
    pooled = math.sqrt(sum(s * s for s in stdevs) / len(stdevs)) if stdevs else 0.0
    threshold = max(SPEED_SIGMAS * pooled, SPEED_REL * median)
    drop = median - new["decode_tok_s"]
    if drop <= threshold:
        return None
    return Regression("speed", new, f"median {median:.1f} tok/s over {len(before)} runs",
                      f"{new['decode_tok_s']:.1f} tok/s",
                      signed(-100 * drop / median, 1, "%"),
                      f"−{threshold:.1f} tok/s (pooled stdev {pooled:.2f})")


def memory_regression(prev: Sequence[Row], new: Row) -> Optional[Regression]:
    if new.get("status") != "ok":
        return None
    value, kind = memory_metric(new)
    if value is None:
        return None
    before = [v for r in prev if r.get("status") == "ok"
              for v, k in [memory_metric(r)] if v is not None and k == kind]
    if not before:
        return None
    top = max(before)
    threshold = max(MEMORY_REL * top, MEMORY_ABS)
    if value - top <= threshold:
        return None
    return Regression("memory", new, f"max {size(top)} ({kind}) over {len(before)} runs",
                      size(value), f"+{size(value - top)}", f"+{size(threshold)}")


def _acc_stderr(row: Row) -> float:
    """MMLU standard error; binomial from n when not recorded; 0 when neither is known."""
    if row.get("mmlu_stderr") is not None:
        return float(row["mmlu_stderr"])
    p, n = row["mmlu_acc"], row.get("mmlu_n")
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def accuracy_regression(prev: Sequence[Row], new: Row) -> Optional[Regression]:
    before = _comparable(prev, new, "mmlu_acc")
    if not before:
        return None
    old = before[-1]
    threshold = ACC_SIGMAS * math.hypot(_acc_stderr(new), _acc_stderr(old))
    drop = old["mmlu_acc"] - new["mmlu_acc"]
    if drop <= threshold:
        return None
    return Regression("accuracy", new, f"MMLU {old['mmlu_acc']:.4f} (run {old.get('run_id')})",
                      f"MMLU {new['mmlu_acc']:.4f}", signed(-100 * drop, 2, " pp"),
                      f"−{100 * threshold:.2f} pp")


def status_regression(prev: Sequence[Row], new: Row) -> Optional[Regression]:
    if not prev or new.get("status") not in STATUS_FAILED or prev[-1].get("status") != "ok":
        return None
    reason = f": {new['error']}" if new.get("error") else ""
    return Regression("status", new, f"ok (run {prev[-1].get('run_id')})",
                      f"{new.get('status')}{reason}", "ok → " + str(new.get("status")),
                      "any failure")


CHECKS = (status_regression, speed_regression, memory_regression, accuracy_regression)


def find(rows: Sequence[Row]) -> list[Regression]:
    """Every regression of every cell's newest run against its earlier runs, table order."""
    found = []
    for hist in histories(rows).values():
        if len(hist) < 2:
            continue
        for check in CHECKS:
            reg = check(hist[:-1], hist[-1])
            if reg is not None:
                found.append(reg)
    return sorted(found, key=lambda r: (cell_label(r.row), str(r.row.get("host")), r.kind))


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
                "Threshold": r.threshold, "Newest run": str(r.row.get("run_id")),
                "Source": sources.ref(r.row)} for r in regs]
    if not records:
        return "No regressions: every cell's newest run is within the noise of its history."
    return md_table(records, list(records[0]))


LEGEND = (
    "A history is the rows of one cell_id on one host, ordered by started_at; the newest "
    "run is compared with the earlier ones. speed: newest decode tok/s below the previous "
    "runs' median by more than max(3 × pooled decode_tok_s_stdev, 5 % of the median) "
    "(pooled = root mean square of the recorded stdevs, newest included). memory: newest "
    "peak (device peak on a GPU, peak host RSS on a CPU; only like with like) above the "
    "previous maximum by more than max(2 %, 16 MiB). accuracy: MMLU below the previous "
    "scored run by more than 2 × √(stderr_new² + stderr_old²). status: ok in the previous "
    "run, oom / error / timeout in the newest. `python -m bench.report --fail-on-regression` "
    "exits 1 when this table is not empty."
)
