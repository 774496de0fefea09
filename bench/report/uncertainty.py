"""How sure a figure is: 95 % intervals of accuracies, and whether a scheme's accuracy
differs from its reference's on the very same questions.

Intervals are Wilson score intervals (sound near 0 and 1 and at small n, where the normal
approximation is not). The paired test is McNemar's on the per-question outcomes both rows
stored (`accuracy_outcomes`, the same items by `accuracy_items`): only the questions one got
right and the other wrong count; exact (binomial) below 25 such questions, else the
chi-square test with continuity correction. Computed here from stored rows, never by
rerunning a cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from bench.core.intervals import wilson
from bench.report.data import map_column

ALPHA = 0.05  # two-sided
EXACT_BELOW = 25  # discordant questions under which McNemar's exact test is used


def interval_text(p: Optional[float], n: Optional[int]) -> str:
    """`[0.210, 0.281]`, or nothing without a count."""
    if p is None or not n:
        return ""
    low, high = wilson(float(p), int(n))
    return f" [{low:.3f}, {high:.3f}]"


def mcnemar_p(worse: int, better: int) -> float:
    """Two-sided p-value of McNemar's test from the two discordant counts."""
    from scipy.stats import binomtest, chi2

    discordant = worse + better
    if discordant == 0:
        return 1.0
    if discordant < EXACT_BELOW:
        return float(binomtest(min(worse, better), discordant, 0.5).pvalue)
    statistic = (abs(worse - better) - 1) ** 2 / discordant
    return float(chi2.sf(statistic, 1))


def fewest_flips(n: int) -> Optional[int]:
    """The fewest questions that must all flip one way for any difference to show at n
    items (exact test: 2 × 0.5^k < α); None when even all n flipping cannot."""
    for k in range(1, n + 1):
        if 2 * 0.5 ** k < ALPHA:
            return k
    return None


@dataclass(frozen=True)
class Paired:
    """A scheme against its reference on the same items."""

    n: int
    worse: int  # right in the reference, wrong in the scheme
    better: int  # wrong in the reference, right in the scheme

    @property
    def p(self) -> float:
        return mcnemar_p(self.worse, self.better)

    def verdict(self) -> str:
        """Significant or not, in words a reader can act on."""
        flips = fewest_flips(self.n)
        if self.p < ALPHA:
            return f"significant (McNemar p = {self.p:.3g}, {self.worse}↓ {self.better}↑)"
        if flips is None or flips > self.n // 2:
            return (f"n = {self.n} cannot separate schemes (≥ {flips or self.n + 1} items "
                    f"would have to flip one way)")
        return (f"no detectable difference at n = {self.n} (McNemar p = {self.p:.2f}, "
                f"{self.worse}↓ {self.better}↑)")


def paired(reference: Any, row: Any, key: str) -> Optional[Paired]:
    """The paired comparison of `row` against `reference` on task/metric `key`, where both
    stored outcomes for the same items; None where they did not."""
    ref_bits, bits = (map_column(reference, "accuracy_outcomes").get(key),
                      map_column(row, "accuracy_outcomes").get(key))
    if not ref_bits or not bits or len(ref_bits) != len(bits):
        return None
    same_items = (map_column(reference, "accuracy_items").get(key)
                  == map_column(row, "accuracy_items").get(key))
    if not same_items:
        return None
    pairs = list(zip(ref_bits, bits, strict=True))
    worse = sum(1 for a, b in pairs if a == "1" and b == "0")
    better = sum(1 for a, b in pairs if a == "0" and b == "1")
    return Paired(len(bits), worse, better)
