"""Run-to-run noise: how far the runs of an unchanged cell drift apart on one host and
device, the yardstick a newest run's decode speed is judged against (bench.report.regressions).

A run's calls share its machine state, and its tokens share their call's, so neither tokens
nor calls are independent samples of "this version's speed": the run is. A run's level is
its typical per-token decode interval; the noise is von Neumann's mean square successive
difference of log levels over successive unchanged runs (a slow trend barely counts), per
cell and pooled over a host's cells.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy.stats import t as student_t
from scipy.stats import trim_mean

from bench.report.data import Row

ALPHA = 0.01  # significance level of the one-sided test

MIN_EFFECT = 0.05  # smallest relative change of the median reported as a regression

MIN_CALLS = 3  # timed calls with per-token intervals a run needs for its level

TRIM = 0.1  # each call's interval level: its mean with the top and bottom 10 % cut

NOISE_MIN_PAIRS = 3  # successive unchanged-run pairs before a noise figure is trusted

NOISE_WINDOW = 10  # each cell's most recent pairs that make its noise

POWER = 0.9  # the power at which the page states the smallest slowdown it catches

# What a speed or memory figure depends on besides the cell: a change of any of these starts
# a new baseline. A value missing from either row (older rows) is not a change.
ENVIRONMENT = {"device_name": "device", "driver": "driver", "cuda": "CUDA", "torch": "torch",
               "engine_version": "engine version", "engine_build": "engine build",
               "cpu_model": "CPU"}



def environment_changes(old: Row, new: Row) -> tuple[str, ...]:
    """'torch 2.12.0 → 2.13.0' for each environment column both rows record differently."""
    return tuple(f"{label} {old[col]} → {new[col]}" for col, label in ENVIRONMENT.items()
                 if old.get(col) is not None and new.get(col) is not None
                 and old[col] != new[col])



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



def successive_squares(hist: Sequence[Row]) -> list[float]:
    """The squared log-level steps of the history's last NOISE_WINDOW pairs of successive
    ok runs with per-token intervals and one environment."""
    levelled = [(r, level) for r in hist
                if r.get("status") == "ok" and (level := run_level(r)) is not None]
    return [math.log(b / a) ** 2 for (old, a), (new, b) in itertools.pairwise(levelled)
            if not environment_changes(old, new)][-NOISE_WINDOW:]



def pooled(steps: Iterable[tuple[Row, list[float]]]) -> dict[tuple[str, str], RunNoise]:
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
    return pooled((hist[-1], successive_squares(hist)) for hist in hists if hist)



def wider(last: Row, squares: Sequence[float],
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
    return wider(earlier[-1], successive_squares(earlier), host)
