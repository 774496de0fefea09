"""Table 6, history and regressions: successive runs of one cell on one host, newest vs before.

Speed is judged as asv and pyperf judge a benchmark: by a significance test, and only with a
minimum effect, so that a noisy neighbour is not a regression and a tiny real change is not
worth a page. Decode speed is judged against the host's own run-to-run noise: how far the
typical per-token interval of unchanged runs drifts from one run to the next, measured from
the successive runs of every cell of the host's history. A run's calls share its machine
state, and its tokens share their call's, so neither tokens nor calls are independent
samples of "this version's speed": the run is. Rows from before intervals were stored fall
back to a one-sided Mann–Whitney U of per-repeat decode tok/s, and older rows to a noise
threshold; a cell whose data cannot reach a verdict (noise not yet measured, 3 repeats
against 3) is named with its reason. benchmarks/regression_power.py measures how often each
kind of slowdown is caught on real samples. Memory must exceed the previous
maximum by a margin, MMLU must drop by more than 2 × the combined standard error, and a
status that went from ok to oom / error / timeout is always reported. Runs whose
environment (device, driver, CUDA, torch, engine version and build, CPU model) differs are
not compared for speed and memory; the regressions page says which and why.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from scipy.special import comb
from scipy.stats import mannwhitneyu, trim_mean
from scipy.stats import t as student_t

from bench.core.schema import STATUS_FAILED
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

MIB = 2**20
ALPHA = 0.01  # significance level of the one-sided test
MIN_EFFECT = 0.05  # smallest relative change of the median reported as a regression
POOLED_RUNS = 3  # earlier runs whose samples form the baseline
MIN_SAMPLES = 3  # per side, for a test (fewer: the noise-threshold rule)
MIN_CALLS = 3  # timed calls with per-token intervals a run needs for its level
TRIM = 0.1  # each call's interval level: its mean with the top and bottom 10 % cut
NOISE_MIN_PAIRS = 3  # successive unchanged-run pairs before a noise figure is trusted
NOISE_WINDOW = 10  # each cell's most recent pairs that make its noise
POWER = 0.9  # the power at which the page states the smallest slowdown it catches
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


def call_intervals(row: Row) -> list[np.ndarray]:
    """The row's per-token decode intervals (ms), one array per timed call (a missing
    interval drops itself, not its run)."""
    flat = np.asarray([np.nan if x is None else x for x in row.get("token_intervals_ms") or []],
                      dtype=float)
    counts = [int(c) for c in row.get("token_intervals_per_call") or []]
    if not flat.size or sum(counts) != flat.size:
        return []
    edges = np.cumsum([0, *counts])
    calls = (flat[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True))
    return [kept for call in calls if (kept := call[np.isfinite(call)]).size]


def run_level(row: Row) -> Optional[float]:
    """A run's typical per-token decode interval (ms): the median over its timed calls of
    each call's 10 %-trimmed mean interval. None with fewer than MIN_CALLS calls, or a
    level that is not a positive time."""
    calls = call_intervals(row)
    if len(calls) < MIN_CALLS:
        return None
    level = float(np.median([trim_mean(call, TRIM) for call in calls]))
    return level if math.isfinite(level) and level > 0 else None


@dataclass(frozen=True)
class RunNoise:
    """How far runs of an unchanged cell drift apart: `sigma` is the standard deviation of
    a run's log level (its relative spread), from `pairs` successive runs of one
    environment: von Neumann's mean square successive difference, so a slow trend barely
    counts, over each cell's last NOISE_WINDOW pairs, so an earlier real step leaves it
    once it is that old. Pooled over a host's cells on one device, or one cell's own."""
    host: str
    device: str
    sigma: float
    pairs: int

    @classmethod
    def of(cls, key: tuple[str, str], squares: Sequence[float]) -> RunNoise:
        return cls(*key, math.sqrt(sum(squares) / (2 * len(squares))), len(squares))

    @property
    def known(self) -> bool:
        return self.pairs >= NOISE_MIN_PAIRS

    def p_slower(self, log_ratio: float, earlier: int) -> float:
        """One-sided p that a newest run `log_ratio` above the mean log level of `earlier`
        unchanged runs is only noise (Student's t with the pairs as degrees of freedom)."""
        scale = self.sigma * math.sqrt(1 + 1 / earlier)
        if scale == 0:
            return 0.0 if log_ratio > 0 else 1.0
        return float(student_t.sf(log_ratio / scale, self.pairs))

    def detectable(self, earlier: int, power: float = POWER) -> float:
        """The smallest slowdown caught with probability `power` against `earlier` runs:
        past both the significance test and the MIN_EFFECT gate that often."""
        spread = self.sigma * math.sqrt(1 + 1 / earlier)
        beyond = float(student_t.isf(1 - power, self.pairs)) * spread
        significant = float(student_t.isf(ALPHA, self.pairs)) * spread
        return math.expm1(max(significant, math.log1p(MIN_EFFECT)) + beyond)


def noise_key(row: Row) -> tuple[str, str]:
    """Whose noise a row shares: its host and the device it ran on."""
    return str(row.get("host") or ""), str(row.get("device_name") or row.get("device") or "")


def _successive_squares(hist: Sequence[Row]) -> list[float]:
    """The squared log-level steps of the history's last NOISE_WINDOW pairs of successive
    ok runs with per-token intervals and one environment."""
    levelled = [(r, level) for r in hist
                if r.get("status") == "ok" and (level := run_level(r)) is not None]
    return [math.log(b / a) ** 2 for (old, a), (new, b) in itertools.pairwise(levelled)
            if not environment_changes(old, new)][-NOISE_WINDOW:]


def _pooled(steps: Iterable[tuple[Row, list[float]]]) -> dict[tuple[str, str], RunNoise]:
    """(a history's last row, its successive squares) pooled by that row's host and
    device."""
    squares: dict[tuple[str, str], list[float]] = defaultdict(list)
    for last, sq in steps:
        squares[noise_key(last)] += sq
    return {key: RunNoise.of(key, sq) for key, sq in squares.items() if sq}


def run_noise(hists: Iterable[Sequence[Row]]) -> dict[tuple[str, str], RunNoise]:
    """Each (host, device)'s run-to-run noise, pooled over its cells' histories. Give it
    the histories without the runs being judged, so that a regression does not widen its
    own yardstick."""
    return _pooled((hist[-1], _successive_squares(hist)) for hist in hists if hist)


def _wider(last: Row, squares: Sequence[float],
           host: Optional[RunNoise]) -> Optional[RunNoise]:
    own = RunNoise.of(noise_key(last), squares) if squares else None
    if own is None or (host is not None and not (own.known and own.sigma > host.sigma)):
        return host
    return own


def cell_noise(earlier: Sequence[Row], host: Optional[RunNoise]) -> Optional[RunNoise]:
    """The noise one cell is judged against: the wider of its own (from its `earlier`
    runs, once known) and its `host`'s pooled over the host's cells. A noisy cell among
    quiet ones is not held to theirs; a cell whose own few runs happened to agree is not
    held to that luck either (one run in ten that other tenants slow by 15 % is this
    VM's noise, and a short history often misses it)."""
    return _wider(earlier[-1], _successive_squares(earlier), host)


def _level_sides(prev: Sequence[Row],
                 new: Row) -> Optional[tuple[float, list[tuple[Row, float]]]]:
    """(newest run's level, up to POOLED_RUNS earlier (row, level)), or None when either side
    has no level."""
    fresh = run_level(new)
    earlier = [(r, level) for r in _comparable(prev, new, "decode_tok_s")
               if (level := run_level(r)) is not None][-POOLED_RUNS:]
    if fresh is None or not earlier:
        return None
    return fresh, earlier


def _against_noise(sides: tuple[float, list[tuple[Row, float]]], new: Row,
                   noise: RunNoise) -> Optional[Regression]:
    fresh, earlier = sides
    base = math.exp(statistics.fmean(math.log(level) for _, level in earlier))
    log_ratio = math.log(fresh / base)
    p_value = noise.p_slower(log_ratio, len(earlier))
    slowdown = math.expm1(log_ratio)
    if p_value >= ALPHA or slowdown < MIN_EFFECT:
        return None
    runs = ", ".join(str(r.get("run_id")) for r, _ in earlier)
    note = busy_note(new)
    calls = len(call_intervals(new))
    return Regression(
        "speed", new, f"{base:.2f} ms per token (runs {runs})",
        f"{fresh:.2f} ms per token ({calls} calls" + (f"; {note})" if note else ")"),
        signed(100 * slowdown, 1, " % per token"),
        f"p < {ALPHA} against the run-to-run noise ({100 * noise.sigma:.1f} % over "
        f"{noise.pairs} pairs of runs) and ≥ {100 * MIN_EFFECT:.0f} % slower", p_value)


def smallest_rank_p(n: int, m: int) -> float:
    """The smallest p a one-sided Mann–Whitney U of n against m samples can give."""
    return float(1 / comb(n + m, n, exact=True))


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


def speed_regression(prev: Sequence[Row], new: Row,
                     noise: Optional[RunNoise] = None) -> Optional[Regression]:
    """Decode speed: the run's level against the host's run-to-run `noise` where both sides
    stored per-token intervals (no verdict while the noise is unknown), else the rank test
    of per-repeat samples, else the noise threshold (older rows)."""
    before = _comparable(prev, new, "decode_tok_s")
    if not before:
        return None
    levels = _level_sides(prev, new)
    if levels is not None:
        return _against_noise(levels, new, noise) if noise and noise.known else None
    sides = _sample_sides(DECODE, prev, new)
    if sides is not None:
        return _tested(DECODE, sides, new)
    return _threshold_speed_regression(before, new)


@dataclass(frozen=True)
class NoVerdict:
    """A cell whose newest run has a history but whose data cannot say whether it slowed."""
    row: Row
    kind: str
    why: str


def speed_gap(prev: Sequence[Row], new: Row,
              noise: Optional[RunNoise] = None) -> Optional[str]:
    """Why the newest run's decode speed cannot be judged against `prev` (runs of its own
    environment) and the host's `noise`, or None when it can."""
    if new.get("status") != "ok":
        return None  # the status check speaks for it
    if not _comparable(prev, new, "decode_tok_s"):
        return "no earlier ok run of the same environment to compare with"
    if _level_sides(prev, new) is not None:
        if noise is not None and noise.known:
            return None
        return (f"the run-to-run noise of this host and device is not measured yet: "
                f"{noise.pairs if noise else 0} pair(s) of successive unchanged runs, "
                f"{NOISE_MIN_PAIRS} needed")
    sides = _sample_sides(DECODE, prev, new)
    if sides is None:
        return None  # the noise-threshold rule decides, as it did before samples
    fresh, base, _ = sides
    floor = smallest_rank_p(len(fresh), len(base))
    if floor >= ALPHA:
        return (f"{len(fresh)} repeats against {len(base)} cannot reach p < {ALPHA} (the "
                f"rank test's smallest p is {floor:.2g}); rows with per-token intervals "
                f"(written since they are stored) are tested on those")
    return None


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


Checker = Callable[[Sequence[Row], Row], Optional[Regression]]


def checks(noise: Optional[RunNoise]) -> tuple[tuple[Checker, bool], ...]:
    """(check, whether it compares only runs of the same environment), speed against the
    cell's host `noise`."""
    return ((status_regression, False),
            (functools.partial(speed_regression, noise=noise), True),
            (ttft_regression, True), (memory_regression, True), (accuracy_regression, False))


@dataclass(frozen=True)
class Findings:
    regressions: list[Regression]
    environment_changes: list[EnvironmentChange]
    no_verdict: list[NoVerdict]
    noise: list[RunNoise]


def find_all(rows: Sequence[Row]) -> Findings:
    """Every regression of every cell's newest run against its earlier runs, and every
    newest run whose environment changed, in table order; the hosts' run-to-run noise
    measured without the newest runs."""
    hists = [h for h in histories(rows).values() if len(h) >= 2]
    steps = [(h[-2], _successive_squares(h[:-1])) for h in hists]  # each history's once
    noise = _pooled(steps)
    found, changed, gaps = [], [], []
    for hist, (last, squares) in zip(hists, steps, strict=True):
        new, prev = hist[-1], hist[:-1]
        same_env = [r for r in prev if not environment_changes(r, new)]
        if changes := environment_changes(prev[-1], new):
            changed.append(EnvironmentChange(new, prev[-1], changes, len(same_env)))
        judged_by = _wider(last, squares, noise.get(noise_key(new)))
        for check, needs_same_env in checks(judged_by):
            reg = check(same_env if needs_same_env else prev, new)
            if reg is not None:
                found.append(reg)
        if (why := speed_gap(same_env, new, judged_by)) is not None:
            gaps.append(NoVerdict(new, "speed", why))
    return Findings(sorted(found, key=lambda r: (*_order(r.row), r.kind)),
                    sorted(changed, key=lambda c: _order(c.row)),
                    sorted(gaps, key=lambda g: _order(g.row)),
                    sorted(noise.values(), key=lambda n: (n.host, n.device)))


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
