"""Each phase has its own deadline, and a phase that fails keeps what the phases before it
measured, with its verdict; a child that dies of a device OOM is an `oom` row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.report.confdata import load_conf
from bench.report.data import load_rows
from bench.report.symbols import NO, OK, PARTIAL, evidence, verdict
from bench.sweep.runner import _death_message, _log_oom_line
from tests.conftest import FAST, run_bench
from tests.report_rows import MIB, write


def rows(results: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(results.rglob("*.parquet"))],
                     ignore_index=True)


@pytest.mark.slow
def test_an_accuracy_phase_that_runs_out_keeps_memory_speed_and_quality(
        tmp_path: Path, cache_dir: Path) -> None:
    """The accuracy phase gets 2 s: it runs out, the cell is a timeout that names the phase,
    and its speed, memory and quality (measured before) are in the row."""
    results = tmp_path / "results"
    proc = run_bench(*FAST, "model=tiny-llama", "quant=fp32", "eval=offline",
                     "eval.quality_chunks=2", "eval.quality_chunk_tokens=128",
                     "cell.phase_timeout_s.accuracy=2", f"results_dir={results}",
                     "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = rows(results).iloc[0]
    assert row.status == "timeout" and row.failed_phase == "eval"
    assert "cell.phase_timeout_s.accuracy=2 during eval" in row.error
    assert row.decode_tok_s > 0 and row.peak_host_rss_bytes > 0 and row.weights_bytes > 0
    assert row.kld_mean == 0.0 and row.top1_agree == 1.0  # the reference against itself
    assert pd.isna(row.mmlu_acc)
    assert dict(row.phase_s)["eval"] >= 2


def test_a_partial_row_keeps_its_fit_verdict_marked(tmp_path: Path) -> None:
    """Memory and speed measured on the GPU, accuracy timed out or ran out of memory in its
    own batches: the class verdict stands (marked *), and an OOM in accuracy is no ❌."""
    results = tmp_path / "results"
    common = dict(quant="fp16", decode_tok_s=40.0, peak_device_bytes=14_000 * MIB)
    write(results, status="timeout", failed_phase="eval",
          error="phase accuracy exceeded cell.phase_timeout_s.accuracy=60 during eval",
          **common)
    write(results, night=1, status="oom", failed_phase="eval", quant="bnb-nf4",
          error="OutOfMemoryError: CUDA out of memory (lm-eval batch)", decode_tok_s=20.0,
          peak_device_bytes=5_000 * MIB)
    write(results, night=1, status="timeout", failed_phase="speed", quant="bnb-int8",
          error="phase measure exceeded cell.phase_timeout_s.measure=1800 during speed")
    conf = load_conf()
    by_quant = {}
    for row in load_rows(results):
        by_quant[row["quant"]] = evidence([row], conf)
    rtx4090 = conf.gpu("rtx4090-24gb")
    assert rtx4090 is not None
    assert verdict(by_quant["fp16"], rtx4090) == OK + PARTIAL
    nf4 = by_quant["bnb-nf4"]
    assert nf4.oom_caps == () and verdict(nf4, rtx4090) == OK + PARTIAL
    assert not verdict(nf4, rtx4090).startswith(NO)
    assert by_quant["bnb-int8"].peak is None  # stopped during speed: nothing to judge


def test_a_child_that_aborts_after_a_device_oom_is_an_oom(tmp_path: Path) -> None:
    """ggml aborts the process (SIGABRT) on a CUDA allocation failure while decoding: the
    child says nothing to the parent, its log does."""
    log = tmp_path / "cell.log"
    line = ("ggml_cuda_host_malloc: failed to allocate 512.00 MiB of pinned memory: "
            "out of memory")
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-c", "import os, sys\n"
                               f"sys.stderr.write({(line + chr(10))!r}); sys.stderr.flush()\n"
                               "os.abort()"], stderr=fh, check=False)
    assert proc.returncode == -6
    found = _log_oom_line(str(log))
    assert found == line
    status, error = _death_message(proc.returncode, "speed", None, found)
    assert status == "oom" and "SIGABRT during speed" in error and "out of memory" in error
    # the same death without such a line stays an error
    log.write_text("llama_decode: something else went wrong\n")
    assert _death_message(-6, "speed", None, _log_oom_line(str(log)))[0] == "error"
    # a SIGKILL needs the kernel's own evidence, whatever the log says
    assert _death_message(-9, "speed", None, found)[0] == "error"
