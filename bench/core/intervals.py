"""The 95 % interval of a proportion (an accuracy, a pass@1): Wilson's score interval, sound
near 0 and 1 and at small n where the normal approximation is not. One definition for the
rows (bench.evals) and the report."""

from __future__ import annotations

LEVEL = 0.95


def wilson(p: float, n: int) -> tuple[float, float]:
    """The interval of a share `p` of `n` items."""
    from scipy.stats import binomtest

    ci = binomtest(int(round(p * n)), n).proportion_ci(LEVEL, method="wilson")
    return float(ci.low), float(ci.high)
