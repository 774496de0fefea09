"""Table 6, history and regressions: successive runs of one cell on one host, newest vs before.

Speed is judged as asv and pyperf judge a benchmark: by a significance test over the stored
per-repeat samples (one-sided Mann–Whitney U of the newest run's repeats against the pooled
repeats of up to three earlier runs), and only with a minimum effect, so that a noisy
neighbour is not a regression and a tiny real change is not worth a page. Rows written
before samples were stored fall back to a noise threshold. Memory must exceed the previous
maximum by a margin, MMLU must drop by more than 2 × the combined standard error, and a
status that went from ok to oom / error / timeout is always reported. Runs whose
environment (device, driver, CUDA, torch, engine version and build, CPU model) differs are
not compared for speed and memory; the regressions page says which and why.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy.stats import mannwhitneyu

from bench.report.data import (
    Row,
    busy_note,
    device_peak,
    engine_of,
    histories,
    is_gpu,
    workload_label,
)
from bench.report.fmt import MISSING, md_table, num, signed, size
from bench.report.provenance import Sources
from bench.schema import STATUS_FAILED

MIB = 2**20
ALPHA = 0.01  # significance level of the one-sided test
MIN_EFFECT = 0.05  # smallest relative change of the median reported as a regression
POOLED_RUNS = 3  # earlier runs whose samples form the baseline
MIN_SAMPLES = 3  # per side, for a test (fewer: the noise-threshold rule)
SPEED_SIGMAS = 3.0  # noise-threshold rule for rows without samples
MEMORY_REL = 0.02
MEMORY_ABS = 16 * MIB
ACC_SIGMAS = 2.0
# What a speed or memory figure depends on besides the cell: a change of any of these starts
# a new baseline. A value missing from either row (older rows) is not a change.
ENVIRONMENT = {"device_name": "device", "driver": "driver", "cuda": "CUDA", "torch": "torch",
               "engine_version": "engine version", "engine_build": "engine build",
               "cpu_model": "CPU"}


@dataclass(frozen=True)
class Regression:
    kind: str  # speed | ttft | memory | accuracy | status
    row: Row  # the newest row
    previous: str
    newest: str
    change: str
    threshold: str
    p_value: Optional[float] = None  # of the significance test, where one was made

    def line(self) -> str:
        """The one line `--fail-on-regression` prints."""
        p = f", p = {self.p_value:.2g}" if self.p_value is not None else ""
        return (f"regression: {self.kind} {cell_label(self.row)} on host {self.row.get('host')}"
                f" (cell {self.row.get('cell_id')}, run {self.row.get('run_id')}): "
                f"{self.previous} -> {self.newest} ({self.change}{p}; threshold "
                f"{self.threshold})")


@dataclass(frozen=True)
class EnvironmentChange:
    """The newest run's environment differs from the run before it: its speed and memory are
    compared only with earlier runs of the same environment (`compared` of them)."""
    row: Row
    previous: Row
    changes: tuple[str, ...]
    compared: int


def cell_label(row: Row) -> str:
    return (f"{row.get('model')} · {engine_of(row)} · {row.get('quant')} · "
            f"{row.get('gpu_class')} · {workload_label(row)}")


def environment_changes(old: Row, new: Row) -> tuple[str, ...]:
    """'torch 2.12.0 → 2.13.0' for each environment column both rows record differently."""
    return tuple(f"{label} {old[col]} → {new[col]}" for col, label in ENVIRONMENT.items()
                 if old.get(col) is not None and new.get(col) is not None
                 and old[col] != new[col])


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


def _samples(row: Row, column: str) -> list[float]:
    return [float(x) for x in row.get(column) or [] if x is not None and math.isfinite(x)]


@dataclass(frozen=True)
class SampleMetric:
    """A speed figure with per-repeat samples: its column, samples, unit and which way is
    worse."""
    kind: str
    column: str
    samples: str
    unit: str
    higher_is_better: bool


DECODE = SampleMetric("speed", "decode_tok_s", "decode_tok_s_samples", "tok/s", True)
TTFT = SampleMetric("ttft", "ttft_ms", "ttft_ms_samples", "ms TTFT", False)


def _sample_sides(metric: SampleMetric, prev: Sequence[Row],
                  new: Row) -> Optional[tuple[list[float], list[float], list[Row]]]:
    """(newest samples, pooled baseline samples, the baseline's runs), or None when either
    side has fewer than MIN_SAMPLES."""
    fresh = _samples(new, metric.samples)
    pool = [r for r in _comparable(prev, new, metric.column)
            if _samples(r, metric.samples)][-POOLED_RUNS:]
    base = [x for r in pool for x in _samples(r, metric.samples)]
    if len(fresh) < MIN_SAMPLES or len(base) < MIN_SAMPLES:
        return None
    return fresh, base, pool


def tested_regression(metric: SampleMetric, prev: Sequence[Row],
                      new: Row) -> Optional[Regression]:
    """One-sided Mann–Whitney U of the newest run's samples against the pooled samples of up
    to POOLED_RUNS earlier runs; a regression when p < ALPHA and the median moved the worse
    way by at least MIN_EFFECT. None also when either side has too few samples."""
    sides = _sample_sides(metric, prev, new)
    return None if sides is None else _tested(metric, sides, new)


def _tested(metric: SampleMetric, sides: tuple[list[float], list[float], list[Row]],
            new: Row) -> Optional[Regression]:
    fresh, base, pool = sides
    worse = "less" if metric.higher_is_better else "greater"
    p_value = float(mannwhitneyu(fresh, base, alternative=worse).pvalue)
    old_med, new_med = statistics.median(base), statistics.median(fresh)
    effect = (new_med - old_med) / old_med
    bad = -effect if metric.higher_is_better else effect
    if p_value >= ALPHA or bad < MIN_EFFECT:
        return None
    runs = ", ".join(str(r.get("run_id")) for r in pool)
    note = busy_note(new)
    return Regression(
        metric.kind, new,
        f"median {old_med:.1f} {metric.unit} ({len(base)} repeats of runs {runs})",
        f"{new_med:.1f} {metric.unit} ({len(fresh)} repeats" + (f"; {note})" if note else ")"),
        signed(100 * effect, 1, " %"),
        f"p < {ALPHA} and ≥ {100 * MIN_EFFECT:.0f} % worse", p_value)


def speed_regression(prev: Sequence[Row], new: Row) -> Optional[Regression]:
    """Decode speed: the significance test where both sides stored samples, else the noise
    threshold (rows written before samples were stored)."""
    before = _comparable(prev, new, "decode_tok_s")
    if not before:
        return None
    sides = _sample_sides(DECODE, prev, new)
    if sides is not None:
        return _tested(DECODE, sides, new)
    return _threshold_speed_regression(before, new)


def ttft_regression(prev: Sequence[Row], new: Row) -> Optional[Regression]:
    return tested_regression(TTFT, prev, new)


def _threshold_speed_regression(before: Sequence[Row], new: Row) -> Optional[Regression]:
    """Below the previous median by more than max(3 × pooled stdev, MIN_EFFECT)."""
    median = statistics.median(r["decode_tok_s"] for r in before)
    stdevs = [r["decode_tok_s_stdev"] for r in [*before, new]
              if r.get("decode_tok_s_stdev") is not None]
    pooled = math.sqrt(sum(s * s for s in stdevs) / len(stdevs)) if stdevs else 0.0
    threshold = max(SPEED_SIGMAS * pooled, MIN_EFFECT * median)
    drop = median - new["decode_tok_s"]
    if drop <= threshold:
        return None
    return Regression("speed", new, f"median {median:.1f} tok/s over {len(before)} runs",
                      f"{new['decode_tok_s']:.1f} tok/s",
                      signed(-100 * drop / median, 1, " %"),
                      f"−{threshold:.1f} tok/s (no samples stored; pooled stdev "
                      f"{pooled:.2f})")


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


def _order(row: Row) -> tuple[str, str]:
    return cell_label(row), str(row.get("host"))


# (check, whether it compares only runs of the same environment)
CHECKS = ((status_regression, False), (speed_regression, True), (ttft_regression, True),
          (memory_regression, True), (accuracy_regression, False))


@dataclass(frozen=True)
class Findings:
    regressions: list[Regression]
    environment_changes: list[EnvironmentChange]


def find_all(rows: Sequence[Row]) -> Findings:
    """Every regression of every cell's newest run against its earlier runs, and every
    newest run whose environment changed, in table order."""
    found, changed = [], []
    for hist in histories(rows).values():
        if len(hist) < 2:
            continue
        new, prev = hist[-1], hist[:-1]
        same_env = [r for r in prev if not environment_changes(r, new)]
        if changes := environment_changes(prev[-1], new):
            changed.append(EnvironmentChange(new, prev[-1], changes, len(same_env)))
        for check, needs_same_env in CHECKS:
            reg = check(same_env if needs_same_env else prev, new)
            if reg is not None:
                found.append(reg)
    return Findings(sorted(found, key=lambda r: (*_order(r.row), r.kind)),
                    sorted(changed, key=lambda c: _order(c.row)))


def find(rows: Sequence[Row]) -> list[Regression]:
    return find_all(rows).regressions


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
    "run is compared with the earlier ones. speed / ttft: the newest run's per-repeat decode "
    "tok/s (TTFT) samples against the pooled samples of up to 3 earlier runs of the same "
    f"environment, one-sided Mann–Whitney U; a regression when p < {ALPHA} and the median is "
    f"at least {100 * MIN_EFFECT:.0f} % worse (Change = relative change of the medians). "
    "Rows written before samples were stored: decode tok/s below the previous median by more "
    "than max(3 × pooled stdev, 5 %). memory: newest peak (device peak on a GPU, peak host "
    "RSS on a CPU; only like with like, same environment) above the previous maximum by more "
    "than max(2 %, 16 MiB). accuracy: MMLU below the previous scored run by more than "
    "2 × √(stderr_new² + stderr_old²). status: ok in the previous run, oom / error / timeout "
    "in the newest. Environment = device, driver, CUDA, torch, engine version and build, CPU "
    "model; a run whose environment changed is listed under Environment changes and its speed "
    "and memory are compared only with runs of its own environment. "
    "`python -m bench.report --fail-on-regression` exits 1 when the regressions table is not "
    "empty."
)
