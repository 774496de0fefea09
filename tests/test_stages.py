"""Accuracy last: a sweep's speed, memory and quality of every cell, the report, then every
cell's accuracy completing the same rows (bench.app.accuracy_last, bench.sweep.runner), resume
between the two stages, identical per-question scoring, and the accuracy progress line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench.app import accuracy_last
from bench.core.schema import ResultRow
from bench.evals.request_counter import EvalProgress
from bench.report.compat import PENDING, humaneval_text, mmlu_text
from bench.results.store import existing_row, write_row
from bench.sweep import runner
from bench.sweep.display import progress_words
from bench.sweep.plan import make_plan
from tests.conftest import FAST, LIGHT_EVAL, run_bench

TWO = ["model=tiny-llama", "quant=fp32,bf16", "eval=offline-small", *LIGHT_EVAL]


def test_two_stages_only_for_several_cells_with_accuracy() -> None:
    assert accuracy_last(make_plan(["model=tiny-llama", "quant=fp32,bf16",
                                    "eval=offline-small"]))
    assert not accuracy_last(make_plan(["model=tiny-llama", "quant=fp32,bf16",
                                        "eval=offline-small", "accuracy_last=false"]))
    assert not accuracy_last(make_plan(["model=tiny-llama", "quant=fp32",
                                        "eval=offline-small"]))  # one cell: one go
    assert not accuracy_last(make_plan(["model=tiny-llama", "quant=fp32,bf16", "eval=none"]))
    assert not accuracy_last(make_plan(["model=tiny-llama", "quant=fp32,bf16",
                                        "eval=offline-small", "eval.mmlu=null",
                                        "eval.mmlu_cloze=false",
                                        "eval.humaneval=false"]))  # quality only


def _first_stage_row(tmp_path: Path) -> tuple[Any, ResultRow]:
    (cell,) = make_plan(["model=tiny-llama", "quant=fp32", "eval=offline-small"])
    row = ResultRow(cell_id=cell.cell_id, run_id="r", status="ok", quant="fp32",
                    decode_tok_s=123.0, peak_host_rss_bytes=456, kld_mean=0.0,
                    accuracy_pending=True, phase_s={"load": 1.0, "speed": 2.0})
    write_row(row, tmp_path)
    return cell, row


def _second_stage(monkeypatch: pytest.MonkeyPatch, outcome: runner.CellOutcome) -> list:
    calls = []

    def fake(cfg, on_phase, log_path, stage="all", on_progress=None):
        calls.append(stage)
        return outcome

    monkeypatch.setattr(runner, "measure_in_children", fake)
    return calls


def test_the_accuracy_stage_completes_the_row_and_keeps_its_figures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell, _ = _first_stage_row(tmp_path)
    calls = _second_stage(monkeypatch, runner.CellOutcome(
        status="ok", phases={"setup": 0.5, "load": 1.5, "eval": 30.0},
        measured={"mmlu_acc": 0.25, "mmlu_n": 57, "accuracy_pending": False,
                  "decode_tok_s": 1.0, "peak_host_rss_bytes": 999, "load_s": 9.0}))
    row = runner.run_cell(cell, "r", str(tmp_path), lambda _: None, stage="accuracy")
    assert calls == ["accuracy"] and row is not None
    stored = existing_row(tmp_path, "r", cell.cell_id)
    assert stored is not None
    # the accuracy stage's own load and memory do not replace the first stage's
    assert (stored["decode_tok_s"], stored["peak_host_rss_bytes"]) == (123.0, 456)
    assert stored["load_s"] is None
    assert (stored["mmlu_acc"], stored["mmlu_n"], stored["accuracy_pending"]) == (0.25, 57,
                                                                                  False)
    assert dict(stored["phase_s"]) == {"load": 1.0, "speed": 2.0, "accuracy_setup": 0.5,
                                       "accuracy_load": 1.5, "eval": 30.0}
    # nothing pending any more: a rerun of the stage leaves the row alone
    assert runner.run_cell(cell, "r", str(tmp_path), lambda _: None, stage="accuracy") is None
    assert calls == ["accuracy"]


def test_a_failed_accuracy_stage_is_the_rows_status_with_its_figures_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell, _ = _first_stage_row(tmp_path)
    _second_stage(monkeypatch, runner.CellOutcome(
        status="oom", error="CUDA out of memory", last_phase="eval",
        measured={"failed_phase": "eval", "error_detail": "Traceback ..."}))
    runner.run_cell(cell, "r", str(tmp_path), lambda _: None, stage="accuracy")
    stored = existing_row(tmp_path, "r", cell.cell_id)
    assert stored is not None
    assert (stored["status"], stored["failed_phase"]) == ("oom", "eval")
    assert stored["error"] == "accuracy stage: CUDA out of memory"
    assert stored["decode_tok_s"] == 123.0 and stored["accuracy_pending"] is False


def test_the_first_stage_leaves_no_reusable_accuracy(tmp_path: Path) -> None:
    """A pending row has its quality but no accuracy: another workload of the same weights
    must not take its empty accuracy over."""
    cell, _ = _first_stage_row(tmp_path)
    assert runner.reusable_accuracy(cell.config, str(tmp_path), "r") == {}


def test_pending_accuracy_reads_as_pending_in_the_report() -> None:
    row = {"status": "ok", "kld_mean": 0.01, "accuracy_pending": True}
    assert mmlu_text(row) == PENDING and humaneval_text(row) == PENDING
    assert mmlu_text({"status": "ok"}) != PENDING


def test_progress_counts_questions_and_gives_an_eta_once_under_way() -> None:
    sent: list[dict] = []
    progress = EvalProgress(sent.append, every_s=0.0)
    progress.expect("MMLU", 171, "questions", requests_per_item=8)  # 4 choices x 2 forms
    progress.add_partial("loglikelihood", None, None)
    assert sent[-1]["done"] == 0 and sent[-1]["eta_s"] is None  # too early to say
    for _ in range(8 * 100 - 1):
        progress.add_partial("loglikelihood", None, None)
    assert (sent[-1]["done"], sent[-1]["total"]) == (100, 171)
    assert sent[-1]["eta_s"] is not None and sent[-1]["eta_s"] >= 0
    assert progress_words({**sent[-1], "eta_s": 65.2}) == "MMLU 100/171 questions · ETA 1m05s"
    assert progress_words({"label": "x", "done": 3, "total": None, "unit": "items",
                           "eta_s": None}) == "x 3 items"
    quiet = EvalProgress(sent.append, every_s=3600.0)
    quiet.expect("HumanEval", 8, "problems")
    before = len(sent)
    for _ in range(5):
        quiet.add_partial("generate_until", None, None)
    assert len(sent) == before + 1  # at most one report per every_s


@pytest.mark.slow
def test_a_two_stage_sweep_reports_first_then_completes_the_same_rows(
        tmp_path: Path, cache_dir: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    proc = run_bench("-m", *FAST, *TWO, f"results_dir={results}", f"reports_dir={reports}",
                     "run_id=staged", cwd=tmp_path, cache=cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    first, second = err.index("stage 1 of 2"), err.index("stage 2 of 2")
    assert first < err.index("wrote", first) < second  # the first report before accuracy
    assert err.index("compatibility.md", second) > second  # and the report again after
    assert "· accuracy stage · eval · MMLU " in err and " questions" in err
    assert "· accuracy stage · eval · HumanEval " in err
    df = pd.read_parquet(results)
    assert len(df) == 2 and (df.status == "ok").all(), df[["quant", "status", "error"]]
    assert not df.accuracy_pending.any() and df.mmlu_acc.notna().all()
    assert df.kld_mean.notna().all() and df.decode_tok_s.notna().all()
    assert all("accuracy_load" in dict(p) and "speed" in dict(p) for p in df.phase_s)

    # interrupted between the stages: one row still pending; the rerun evaluates it alone
    run_dir = results / "staged"
    fp32 = df[df.quant == "fp32"].iloc[0]
    path = run_dir / f"{fp32.cell_id}.parquet"
    before = pq.read_table(path).to_pylist()[0]
    pending = {**before, "accuracy_pending": True,
               **{k: None for k in runner.ACCURACY_STAGE_FIELDS if k != "accuracy_pending"}}
    write_row(ResultRow(**{k: v for k, v in pending.items()
                           if k in {f.name for f in dataclasses.fields(ResultRow)}}), results)
    again = run_bench("-m", *FAST, *TWO, f"results_dir={results}", "report=false",
                      "run_id=staged", cwd=tmp_path, cache=cache_dir, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already in this run, skipped") == 2
    assert again.stderr.count("nothing pending, skipped") == 1
    after = pq.read_table(path).to_pylist()[0]
    assert after["decode_tok_s"] == before["decode_tok_s"]  # the first stage's figures kept
    # the model loaded again scores every question as before
    assert dict(after["accuracy_outcomes"]) == dict(before["accuracy_outcomes"])
    assert after["accuracy_pending"] is False

    # and as one cell in one go (no stages) scores it
    single = run_bench(*FAST, *[a.replace("fp32,bf16", "fp32") for a in TWO],
                       f"results_dir={results}", "report=false", "run_id=single",
                       cwd=tmp_path, cache=cache_dir, timeout=900)
    assert single.returncode == 0 and "stage 1 of 2" not in single.stderr
    one = pd.read_parquet(results / "single").iloc[0]
    assert one.accuracy_pending is None or pd.isna(one.accuracy_pending)
    assert dict(one.accuracy_outcomes) == dict(before["accuracy_outcomes"])


@pytest.mark.slow
def test_the_smaller_sample_scores_its_questions_as_the_larger_one(cache_dir: Path) -> None:
    """eval=offline-small's questions are the first of eval=offline's in every subject (eight
    here, from the shortest to the longest questions); each is answered the same in either
    sample (the batches around it differ)."""
    from bench.engines import load_engine
    from bench.evals.harness import run_evals

    subjects = ["abstract_algebra", "anatomy", "college_physics", "econometrics",
                "high_school_us_history", "moral_scenarios", "professional_law", "virology"]
    (cell,) = make_plan(["model=tiny-llama", "quant=fp32", "eval=offline-small",
                         f"eval.mmlu_subjects=[{','.join(subjects)}]",
                         "eval.humaneval=false", "eval.quality=false"])
    cfg = cell.config
    engine = load_engine(cfg.resolved_engine)
    engine.setup(cfg)
    engine.prepare(cfg)
    loaded = engine.load(cfg, engine.resolve_device("cpu"), None, for_eval=True)
    try:
        small = run_evals(loaded, cfg.eval, cfg.resolved_cache_dir).fields
        larger = dataclasses.replace(cfg.eval, mmlu_limit=2 * cfg.eval.mmlu_limit)
        large = run_evals(loaded, larger, cfg.resolved_cache_dir).fields
    finally:
        loaded.close()
    k = cfg.eval.mmlu_limit
    for key in ("mmlu/acc", "mmlu_cloze/acc"):
        few, many = dict(small["accuracy_outcomes"])[key], dict(large["accuracy_outcomes"])[key]
        n = len(subjects)  # eight of every kind and length (the sample is per subject)
        assert len(few) == n * k and len(many) == n * 2 * k
        assert few == "".join(many[i * 2 * k:i * 2 * k + k] for i in range(n)), key
