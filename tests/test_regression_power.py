"""The speed regression test: a run's level of per-token intervals against its host's
run-to-run noise (bench.report.regressions), and the cells it cannot judge. How often it
catches a slowdown on this machine's real samples is a benchmark's figure
(benchmarks/regression_power.py); here, seeded simulations check that it holds its false
alarm rate and reaches the issue's goal where the noise allows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.report import generate
from bench.report.data import load_rows
from bench.report.noise import ALPHA, RunNoise, call_intervals, cell_noise, run_level, run_noise
from bench.report.regressions import find_all, smallest_rank_p, speed_gap, speed_regression
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


def test_a_runs_level_is_the_median_of_its_calls_trimmed_means() -> None:
    calls = [[10.0] * 9 + [1000.0], [12.0] * 10, [11.0] * 10]  # one stalled token is trimmed
    row = {"token_intervals_ms": [x for c in calls for x in c],
           "token_intervals_per_call": [10, 10, 10]}
    assert run_level(row) == pytest.approx(11.0)
    assert run_level({**row, "token_intervals_ms": row["token_intervals_ms"][:20],
                      "token_intervals_per_call": [10, 10]}) is None  # too few calls


def _run(rng: np.random.Generator, level: float, sigma: float, slower: float = 0.0,
         **fields) -> dict:
    """A run whose level moved by the machine's run-to-run noise `sigma` (log scale), then
    `slower` (a real slowdown), with call-to-call drift and token noise inside it."""
    run_level_ms = level * np.exp(rng.normal(0, sigma)) * (1 + slower)
    return {"status": "ok", "host": "box", "device_name": "dev", "decode_tok_s": 1.0,
            **_fields(_calls(rng, run_level_ms, drift=0.01)), **fields}


def _flag_rates(sigma: float, slower: float, earlier: int = 1, trials: int = 200) -> float:
    """Share of trials flagged: two cells' six earlier nights give the noise, and the
    newest run of one cell is judged against the `earlier` nights before it."""
    rng = np.random.default_rng(int(1000 * sigma + 100 * slower + earlier))
    flagged = 0
    for _ in range(trials):
        hists = [[_run(rng, level, sigma) for _ in range(6)] for level in (10.0, 90.0)]
        noise = cell_noise(hists[0], run_noise(hists)[("box", "dev")])
        new = _run(rng, 10.0, sigma, slower)
        flagged += speed_regression(hists[0][-earlier:], new, noise) is not None
    return flagged / trials


def test_where_runs_repeat_within_1_percent_the_goal_is_met() -> None:
    """The issue's goal — a 10 % slowdown caught ≥ 90 % of the time from one earlier night,
    an unchanged run flagged ≤ 5 % — on a machine whose runs drift 1 % (a quiet GPU box)."""
    assert _flag_rates(0.01, 0.10) >= 0.9
    assert _flag_rates(0.01, 0.0) <= 0.05
    assert _flag_rates(0.01, 0.10, earlier=3) >= 0.9


def test_where_runs_drift_7_percent_an_unchanged_run_is_still_not_flagged() -> None:
    """This VM's noise: no test can catch 10 % reliably, and this one does not pretend to —
    its false alarms stay at α while the smallest slowdown it catches is stated."""
    assert _flag_rates(0.07, 0.0, trials=400) <= 0.025  # α = 1 %, with room for chance
    assert _flag_rates(0.07, 1.0) >= 0.9  # twice as slow
    assert RunNoise("box", "dev", 0.07, 20).detectable(1) > 0.3


def test_the_test_and_its_stated_power_follow_students_t() -> None:
    from scipy.stats import t

    noise = RunNoise("box", "dev", 0.05, 4)
    # the newest run against the mean of 3 earlier ones: σ √(1 + 1/3), 4 degrees of freedom
    assert noise.p_slower(0.1, 3) == pytest.approx(t.sf(0.1 / (0.05 * np.sqrt(4 / 3)), 4))
    spread = 0.05 * np.sqrt(2)
    assert noise.detectable(1) == pytest.approx(
        np.expm1((t.isf(ALPHA, 4) + t.isf(0.1, 4)) * spread))
    assert noise.detectable(3) < noise.detectable(1)
    # where the noise is tiny, the 5 % minimum effect is what must be cleared 90 % of the time
    quiet = RunNoise("box", "dev", 0.001, 20)
    assert quiet.detectable(1) == pytest.approx(
        np.expm1(np.log(1.05) + t.isf(0.1, 20) * 0.001 * np.sqrt(2)))


def _steady(level: float, **fields) -> dict:
    """A run whose every interval is `level` ms: its level exactly."""
    return {"status": "ok", "host": "box", "device_name": "dev", "torch": "2.13.0",
            **_fields([np.full(10, level)] * 3), **fields}


def test_the_baseline_is_the_geometric_mean_and_the_minimum_effect_holds() -> None:
    exact = RunNoise("box", "dev", 0.0, 10)
    earlier = [_steady(10.0), _steady(20.0), _steady(40.0)]  # geometric mean 20
    reg = speed_regression(earlier, _steady(21.5), exact)
    assert reg is not None and reg.previous.startswith("20.00 ms per token")
    assert reg.p_value == 0.0 and reg.change.startswith("+7.5")
    assert speed_regression(earlier, _steady(20.8), exact) is None  # 4 %: below the minimum
    assert speed_regression(earlier, _steady(19.0), exact) is None  # faster


def test_a_cell_is_held_to_the_wider_of_its_own_and_its_hosts_noise() -> None:
    host = RunNoise("box", "dev", 0.01, 30)
    calm = [_steady(10.0 * 1.001 ** (i % 2)) for i in range(7)]  # 6 pairs of 0.1 %
    assert cell_noise(calm, host) is host  # its luck so far does not narrow the yardstick
    wild = [_steady(10.0 * 1.2 ** (i % 2)) for i in range(4)]  # 3 pairs, wider than the host
    assert cell_noise(wild, host).pairs == 3 and cell_noise(wild, host).sigma > 0.1
    assert cell_noise(wild[:3], host) is host  # 2 pairs: its own is not known yet
    assert cell_noise(calm, None).pairs == 6 and cell_noise(calm, None).sigma < 0.002
    assert cell_noise(calm[:1], None) is None


def test_a_bad_interval_drops_itself_and_a_zero_level_is_no_level() -> None:
    row = {"token_intervals_ms": [1.0, float("nan"), 3.0, None, 5.0],
           "token_intervals_per_call": [2, 3]}
    assert [c.tolist() for c in call_intervals(row)] == [[1.0], [3.0, 5.0]]
    assert run_level({"token_intervals_ms": [0.0] * 30,
                      "token_intervals_per_call": [10, 10, 10]}) is None


def test_noise_comes_from_successive_unchanged_runs_without_the_newest() -> None:
    def run(level: float, **fields) -> dict:
        calls = [np.full(10, level)] * 3
        return {"status": "ok", "host": "box", "device_name": "dev", "torch": "2.13.0",
                **_fields(calls), **fields}

    hist = [run(10.0), run(11.0), run(10.0, status="oom"), run(10.0),
            run(20.0, torch="2.14.0"), run(21.0, torch="2.14.0")]
    (noise,) = run_noise([hist]).values()
    # 10 → 11 → 10 (the oom row skipped), the torch change not a pair, 20 → 21
    steps = [np.log(1.1), np.log(10 / 11), np.log(21 / 20)]
    assert noise.pairs == 3
    assert noise.sigma == pytest.approx(np.sqrt(sum(x * x for x in steps) / 6))
    other = [run(10.0, host="other"), run(10.0, host="other")]
    assert set(run_noise([hist, other])) == {("box", "dev"), ("other", "dev")}


def test_rows_with_intervals_are_judged_on_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for night in range(5):
        write(tmp_path, night, **CPU, **_fields(_calls(rng, 10.0, drift=0.005)))
    write(tmp_path, 5, **CPU, **_fields(_calls(rng, 11.5, drift=0.005)))
    found = find_all(load_rows(tmp_path))
    (reg,) = found.regressions
    assert reg.kind == "speed" and "per token" in reg.change and reg.p_value < 0.01
    assert "ms per token (runs " in reg.previous and "run-to-run noise" in reg.threshold
    assert found.no_verdict == []
    (noise,) = found.noise
    assert noise.pairs == 4  # the five earlier nights; the newest is not its own yardstick


def test_two_pairs_of_noise_are_not_yet_a_verdict(tmp_path: Path) -> None:
    for night, level in enumerate((10.0, 10.2, 10.1, 30.0)):
        write(tmp_path, night, **CPU, **_fields([np.full(10, level)] * 3))
    found = find_all(load_rows(tmp_path))
    assert found.regressions == []
    (gap,) = found.no_verdict
    assert "2 pair(s) of successive unchanged runs, 3 needed" in gap.why


def test_without_measured_noise_a_cell_has_no_speed_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    write(tmp_path, 0, **CPU, **_fields(_calls(rng, 10.0)))
    write(tmp_path, 1, **CPU, **_fields(_calls(rng, 20.0)))  # twice as slow, yet unjudged
    found = find_all(load_rows(tmp_path))
    assert [r.kind for r in found.regressions] == []
    (gap,) = found.no_verdict
    assert gap.why.startswith("the run-to-run noise of this host and device is not measured "
                              "yet: 0 pair(s)")
    reports = tmp_path / "reports"
    generate(tmp_path, reports)
    page = (reports / "regressions.md").read_text(encoding="utf-8")
    assert "Run-to-run noise" in page and "is not measured yet" in page


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
