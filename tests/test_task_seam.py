"""Adding a model task touches its own package and its conf/model file, nothing else: a
test-only task, installed as a plugin (an entry point in the `bench.tasks` group), runs a
real cell through an existing engine with its own workload, row fields and report heading."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, REPO
from tests.test_report import md_tables

INIT = '''
"""A test-only model task: how fast a text model scores a prompt (log-likelihoods of every
position in one pass, no generation)."""
import time
from dataclasses import dataclass

from bench.core.errors import BenchInputError
from bench.tasks.base import Speed, Task


@dataclass(frozen=True)
class Scoring(Task):
    def check(self, cfg):
        if cfg.workload.prompt_tokens < 2:
            raise BenchInputError("workload.prompt_tokens must be >= 2 to score (its own rule)")

    def describe_workload(self, cfg):
        return f"scored={cfg.workload.prompt_tokens}"

    def workload_fields(self, cfg):
        return {"prompt_tokens": cfg.workload.prompt_tokens}

    def measure_speed(self, loaded, cfg, window):
        from bench.data.prompts import random_prompt
        from bench.meters.windows import GENERATE
        from bench.tasks.timing import repeat_timed

        w = cfg.workload
        ids = random_prompt(1, w.prompt_tokens, cfg.model.arch.vocab_size, cfg.seed)[0]
        loaded.logprobs(ids.tolist())  # warm-up

        def call():
            start = time.perf_counter()
            loaded.logprobs(ids.tolist())
            return time.perf_counter() - start

        window.open(GENERATE)
        times, wall = repeat_timed(w, w.repeats, call, lambda s: s)
        window.close(GENERATE, len(times), 0)
        median = sorted(times)[len(times) // 2]
        return Speed({"prefill_tok_s": w.prompt_tokens / median, "repeats": len(times),
                      "timed_s": wall})


TASKS = (Scoring("text-scoring", "Scoring (prompt log-likelihoods)",
                 runs_on=("text-generation",), speed_column="prefill_tok_s",
                 speed_label="Scored tok/s", report_rank=50),)
'''


def _plugin(tmp: Path) -> tuple[Path, Path]:
    site = tmp / "site"
    (site / "scoring_task").mkdir(parents=True)
    (site / "scoring_task" / "__init__.py").write_text(INIT)
    info = site / "scoring_task-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scoring-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.tasks]\ntext-scoring = scoring_task\n")
    conf = tmp / "conf"
    shutil.copytree(REPO / "conf", conf)
    model = (REPO / "conf" / "model" / "tiny-llama.yaml").read_text()
    (conf / "model" / "tiny-scorer.yaml").write_text(
        model.replace("name: tiny-llama", "name: tiny-scorer\ntask: text-scoring")
        .replace("default_weights: tiny", "default_weights: synthetic"))
    return site, conf


def _bench(tmp: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    site, conf = _plugin(tmp) if not (tmp / "site").exists() else (tmp / "site", tmp / "conf")
    env = {**os.environ, "BENCH_CONF_DIR": str(conf), "BENCH_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_plugin_task_runs_a_cell_with_its_own_package_and_conf(tmp_path: Path,
                                                                 cache_dir: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    plan = _bench(tmp_path, cache_dir, "model=tiny-scorer", "quant=fp32", "eval=none",
                  "dry_run=true")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "model=tiny-scorer weights=synthetic engine=hf quant=fp32" in plan.stdout
    assert "scored=128" in plan.stdout  # its own words for its workload
    proc = _bench(tmp_path, cache_dir, "model=tiny-scorer", "quant=fp32", "eval=none", *FAST,
                  f"results_dir={results}", f"reports_dir={reports}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = pd.read_parquet(results).iloc[0]
    assert row.status == "ok", row.error
    assert row.task == "text-scoring" and row.prefill_tok_s > 0 and row.repeats >= 3
    assert pd.isna(row.decode_tok_s) and row.peak_host_rss_bytes > 0  # the meters ran
    text = (reports / "compatibility.md").read_text(encoding="utf-8")
    assert "## Scoring (prompt log-likelihoods)" in text
    heading = text.index("## Scoring (prompt log-likelihoods)")
    (scoring, *_) = md_tables(text[heading:])
    assert scoring[0]["Model"] == "tiny-scorer (synthetic)" and float(
        scoring[0]["Scored tok/s"].replace(",", "")) > 0
    # its own checks and the other tasks' keys are refused in one line, before any work
    bad = _bench(tmp_path, cache_dir, "model=tiny-scorer", "quant=fp32", "eval=none",
                 "workload.prompt_tokens=1", "dry_run=true")
    assert bad.returncode == 2 and "its own rule" in bad.stderr
    image = _bench(tmp_path, cache_dir, "model=tiny-scorer", "quant=fp32", "eval=none",
                   "workload.image=coffee", "dry_run=true")
    assert image.returncode == 2 and "not read by model=tiny-scorer" in image.stderr
    gguf = _bench(tmp_path, cache_dir, "model=tiny-scorer", "quant=gguf-q8_0", "eval=none",
                  "engine=hf", "dry_run=true")
    assert gguf.returncode == 2 and "engine=hf cannot run quant=gguf-q8_0" in gguf.stderr
