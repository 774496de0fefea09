"""How sure a figure is: Wilson intervals, McNemar's paired test on stored per-question
outcomes, and what the report says of a drop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.core.intervals import wilson
from bench.report import build_report
from bench.report.uncertainty import Paired, fewest_flips, mcnemar_p, paired
from tests.report_rows import CPU, write

Z = 1.959963984540054


@pytest.mark.parametrize(("p", "n"), [(0.244, 570), (0.5, 8), (0.0, 8), (1.0, 164)])
def test_the_wilson_interval_is_the_textbook_formula(p: float, n: int) -> None:
    k = round(p * n)
    share = k / n
    centre = (share + Z ** 2 / (2 * n)) / (1 + Z ** 2 / n)
    half = Z * math.sqrt(share * (1 - share) / n + Z ** 2 / (4 * n ** 2)) / (1 + Z ** 2 / n)
    low, high = wilson(p, n)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)


def test_mcnemar_is_exact_for_few_discordant_questions_and_chi_square_beyond() -> None:
    assert mcnemar_p(6, 0) == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_p(3, 2) == pytest.approx(1.0)
    assert mcnemar_p(0, 0) == 1.0
    statistic = (abs(40 - 20) - 1) ** 2 / 60  # continuity-corrected, one degree of freedom
    assert mcnemar_p(40, 20) == pytest.approx(math.erfc(math.sqrt(statistic / 2)))


def test_what_a_drop_means_at_each_n() -> None:
    assert fewest_flips(8) == 6 and fewest_flips(3) is None
    assert "cannot separate" in Paired(8, 2, 0).verdict()
    assert "no detectable difference at n = 570" in Paired(570, 12, 9).verdict()
    assert Paired(570, 40, 10).verdict().startswith("significant (McNemar p = ")


def test_pairs_are_made_only_on_the_same_items() -> None:
    ref = {"accuracy_outcomes": {"mmlu/acc": "1100"}, "accuracy_items": {"mmlu/acc": "h1"}}
    row = {"accuracy_outcomes": [("mmlu/acc", "1010")], "accuracy_items": {"mmlu/acc": "h1"}}
    assert paired(ref, row, "mmlu/acc") == Paired(4, 1, 1)
    other = {**row, "accuracy_items": {"mmlu/acc": "h2"}}
    assert paired(ref, other, "mmlu/acc") is None
    assert paired(ref, {"accuracy_outcomes": {}}, "mmlu/acc") is None


def test_the_table_shows_intervals_and_whether_a_drop_is_detectable(tmp_path: Path) -> None:
    results, reports = tmp_path / "r", tmp_path / "out"
    right = "1" * 140 + "0" * 430
    common = dict(model="smollm2-135m", weights="packaged", eval_set="offline", mmlu_n=570,
                  peak_host_rss_bytes=300 * 2**20, **CPU)
    write(results, quant="fp32", bits=32, mmlu_acc=140 / 570,
          accuracy_outcomes={"mmlu/acc": right}, accuracy_items={"mmlu/acc": "same"},
          accuracy_n={"mmlu/acc": 570}, **common)
    flipped = "0" * 5 + right[5:]  # five questions lost, nothing gained
    write(results, quant="bnb-nf4", bits=4, mmlu_acc=135 / 570,
          accuracy_outcomes={"mmlu/acc": flipped}, accuracy_items={"mmlu/acc": "same"},
          accuracy_n={"mmlu/acc": 570}, **common)
    build_report(results, reports)
    table = (reports / "compatibility.md").read_text(encoding="utf-8")
    low, high = wilson(140 / 570, 570)
    assert f"0.2456 [{low:.3f}, {high:.3f}] (n=570)" in table
    assert "no detectable difference at n = 570 (McNemar p = 0.06, 5↓ 0↑)" in table
