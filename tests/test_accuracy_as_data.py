"""An accuracy task is data: one conf file (conf/accuracy/<name>.yaml, an lm-eval task config
inline) and the data it names; a cell scores it through lm-eval on the model it loaded, and
the report renders its figure with its interval and pairs two schemes item by item."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.core.errors import BenchInputError
from tests.conftest import FAST, REPO, run_bench
from tests.test_report import find_row, page

FACTS = [("Which is a colour?", ["red", "seven", "walk", "under"], 0),
         ("Which is a number?", ["blue", "nine", "run", "over"], 1),
         ("Which is an animal?", ["chair", "green", "dog", "three"], 2),
         ("Which is a fruit?", ["stone", "apple", "jump", "four"], 1),
         ("Which is a planet?", ["Mars", "table", "sing", "eight"], 0),
         ("Which is a metal?", ["paper", "silk", "iron", "bread"], 2),
         ("Which is a month?", ["spoon", "March", "cloud", "river"], 1),
         ("Which is a weekday?", ["Friday", "pencil", "grass", "horse"], 0)]

CONF = """\
# A test's accuracy task: eight invented facts, multiple choice, scored by lm-eval.
name: tiny-facts
metric: acc
shots: 0
task:
  task: tiny_facts
  dataset_path: json
  dataset_kwargs: {data_files: {test: data/tiny_facts.jsonl}}
  test_split: test
  output_type: multiple_choice
  doc_to_text: "Question: {{question}}\\nAnswer:"
  doc_to_choice: "{{choices}}"
  doc_to_target: answer
  metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]
  metadata: {version: 1.0}
"""


def _conf(tmp: Path) -> Path:
    """bench's conf/ with the one file the task is, and the data it names."""
    conf = tmp / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "accuracy").mkdir(exist_ok=True)
    (conf / "accuracy" / "tiny-facts.yaml").write_text(CONF)
    (conf / "accuracy" / "data").mkdir()
    (conf / "accuracy" / "data" / "tiny_facts.jsonl").write_text("".join(
        json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in FACTS))
    return conf


@pytest.mark.slow
def test_an_accuracy_task_added_as_one_conf_file_is_scored_and_reported(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _conf(tmp_path)
    monkeypatch.setenv("BENCH_CONF_DIR", str(conf))
    results, reports = tmp_path / "results", tmp_path / "reports"
    proc = run_bench("-m", "model=tiny-llama", "quant=fp32,bf16", "eval=offline-small",
                     "eval.mmlu=null", "eval.mmlu_cloze=false", "eval.humaneval=false",
                     "eval.quality=false", "eval.tasks=[tiny-facts]", "accuracy_last=false",
                     *FAST, f"results_dir={results}", f"reports_dir={reports}", cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_parquet(results)
    assert set(rows.status) == {"ok"}, rows.error.tolist()
    for _, row in rows.iterrows():
        acc, n = dict(row.accuracy), dict(row.accuracy_n)
        assert set(acc) == {"tiny-facts/acc"} and n["tiny-facts/acc"] == len(FACTS)
        bits = dict(row.accuracy_outcomes)["tiny-facts/acc"]
        assert len(bits) == len(FACTS) and acc["tiny-facts/acc"] == bits.count("1") / len(FACTS)
        assert row.mmlu_acc is None or pd.isna(row.mmlu_acc)
    table = page(reports, "compatibility.md")
    fp32 = find_row(table, Model="tiny-llama (tiny)", Quant="fp32")
    other = fp32["Other accuracy"]
    assert other.startswith("tiny-facts/acc 0.") and "(n=8)" in other
    assert "[" in other  # its 95 % interval
    bf16 = find_row(table, Model="tiny-llama (tiny)", Quant="bf16")
    delta = bf16["Δ accuracy vs best precision"]
    assert delta.startswith("tiny-facts/acc ") and "vs fp32" in delta


def test_a_bad_accuracy_conf_file_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from bench.evals.data_tasks import conf_tasks

    conf = _conf(tmp_path)
    monkeypatch.setenv("BENCH_CONF_DIR", str(conf))
    assert set(conf_tasks()) == {"tiny-facts"}
    (conf / "accuracy" / "broken.yaml").write_text("name: broken\nmetric: acc\n")
    with pytest.raises(BenchInputError, match="give either lm_eval"):
        conf_tasks()
