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
import math
import statistics
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from scipy.special import comb
from scipy.stats import mannwhitneyu

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
from bench.report.fmt import signed, size
from bench.report.noise import (
    ALPHA,
    MIN_EFFECT,
    NOISE_MIN_PAIRS,
    RunNoise,
    call_intervals,
    environment_changes,
    noise_key,
    pooled,
    run_level,
    successive_squares,
    wider,
)

MIB = 2**20
POOLED_RUNS = 3  # earlier runs whose samples form the baseline
MIN_SAMPLES = 3  # per side, for a test (fewer: the noise-threshold rule)
SPEED_SIGMAS = 3.0  # noise-threshold rule for rows without samples
MEMORY_REL = 0.02
MEMORY_ABS = 16 * MIB
ACC_SIGMAS = 2.0


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
    steps = [(h[-2], successive_squares(h[:-1])) for h in hists]  # each history's once
    noise = pooled(steps)
    found, changed, gaps = [], [], []
    for hist, (last, squares) in zip(hists, steps, strict=True):
        new, prev = hist[-1], hist[:-1]
        same_env = [r for r in prev if not environment_changes(r, new)]
        if changes := environment_changes(prev[-1], new):
            changed.append(EnvironmentChange(new, prev[-1], changes, len(same_env)))
        judged_by = wider(last, squares, noise.get(noise_key(new)))
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


