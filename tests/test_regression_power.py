"""The speed regression test on per-token intervals grouped by call and run
(bench.report.regressions) and the cells it cannot judge. How often it catches a slowdown on
real samples is a benchmark's figure (benchmarks/regression_power.py), not a test's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.report import generate
from bench.report.data import load_rows
from bench.report.regressions import (
    call_intervals,
    find_all,
    grouped_slowdown,
    smallest_rank_p,
    speed_gap,
)
from benchmarks.regression_power import slowed
from tests.report_rows import CPU, write


def _calls(rng: np.random.Generator, level: float, calls: int = 5, tokens: int = 63,
           drift: float = 0.02) -> list[np.ndarray]:
    """Calls whose intervals share a level that drifts call to call (the machine's state)."""
    return [rng.normal(level * (1 + rng.normal(0, drift)), 0.05 * level, tokens).clip(0.01)
            for _ in range(calls)]


def _fields(calls: list[np.ndarray]) -> dict:
    flat = [float(x) for c in calls for x in c]
    return dict(token_intervals_ms=flat, token_intervals_per_call=[len(c) for c in calls],
                decode_tok_s=1000 / float(np.mean(flat)),
                decode_tok_s_samples=[1000 / float(np.mean(c)) for c in calls])


def test_intervals_are_split_back_into_their_calls() -> None:
    row = {"token_intervals_ms": [1.0, 2.0, 3.0, 4.0, 5.0], "token_intervals_per_call": [2, 3]}
    assert [c.tolist() for c in call_intervals(row)] == [[1.0, 2.0], [3.0, 4.0, 5.0]]
    assert call_intervals({**row, "token_intervals_per_call": [2, 2]}) == []  # inconsistent
    assert call_intervals({"token_intervals_ms": None}) == []


def test_the_grouped_test_separates_a_slowdown_from_an_unchanged_run() -> None:
    rng = np.random.default_rng(0)
    earlier = [_calls(rng, 10.0)]
    slowdown, p = grouped_slowdown(_calls(rng, 11.0), earlier)
    assert 0.05 < slowdown < 0.15 and p < 0.01
    slowdown, p = grouped_slowdown(_calls(rng, 10.0), earlier)
    assert abs(slowdown) < 0.05 and p > 0.01


def test_tokens_of_one_call_are_not_counted_as_independent() -> None:
    """Two runs whose calls sit 3 % apart by chance (the call-level drift): thousands of
    tokens would make that 'significant' if each token counted alone; grouped by call, the
    spread of the calls themselves is the noise."""
    rng = np.random.default_rng(1)
    base = [rng.normal(10.0 * (1 + d), 0.1, 500) for d in (-0.03, 0.0, 0.03)]
    new = [rng.normal(10.0 * (1 + d), 0.1, 500) for d in (0.0, 0.03, 0.06)]
    slowdown, p = grouped_slowdown(new, [base])
    assert 0.02 < slowdown < 0.04
    assert p > 0.01


def test_rows_with_intervals_are_judged_on_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for night in range(2):
        write(tmp_path, night, **CPU, **_fields(_calls(rng, 10.0)))
    write(tmp_path, 2, **CPU, **_fields(_calls(rng, 11.5)))
    found = find_all(load_rows(tmp_path))
    (reg,) = found.regressions
    assert reg.kind == "speed" and "per token" in reg.change and reg.p_value < 0.01
    assert "ms per token (10 calls of runs" in reg.previous
    assert found.no_verdict == []


def test_a_cell_that_cannot_reach_a_verdict_says_why(tmp_path: Path) -> None:
    """3 repeats against 3, without intervals (rows from before they were stored): the rank
    test cannot reach p < 0.01, and the page says so for that cell."""
    assert smallest_rank_p(3, 3) == pytest.approx(0.05)
    for night, samples in enumerate(([100.0, 101.0, 99.0], [90.0, 89.0, 91.0])):
        write(tmp_path, night, **CPU, decode_tok_s=samples[1], decode_tok_s_samples=samples)
    rows = load_rows(tmp_path)
    found = find_all(rows)
    assert found.regressions == []
    (gap,) = found.no_verdict
    assert "3 repeats against 3 cannot reach p < 0.01" in gap.why
    reports = tmp_path / "reports"
    generate(tmp_path, reports)
    page = (reports / "regressions.md").read_text(encoding="utf-8")
    assert "Cells without a verdict" in page and "3 repeats against 3" in page
    # a newest run with nothing of its environment before it says that instead
    assert speed_gap([], rows[-1]) == "no earlier ok run of the same environment to compare with"


def test_a_slowed_row_is_slower_everywhere_the_detectors_look() -> None:
    row = {"token_intervals_ms": [10.0, 20.0], "decode_tok_s_samples": [50.0],
           "decode_tok_s": 50.0}
    out = slowed(row, 0.1)
    assert out["token_intervals_ms"] == pytest.approx([11.0, 22.0])
    assert out["decode_tok_s"] == pytest.approx(50 / 1.1)
