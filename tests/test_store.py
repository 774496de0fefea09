"""The Parquet store: atomic files, typed nulls, tolerant readers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.core.errors import BenchInputError
from bench.core.schema import ARROW_SCHEMA, COLUMNS, SCHEMA_VERSION, ResultRow
from bench.results.store import existing_row, read_results, row_path, write_row
from tests.conftest import REPO

CONTRACT = """cell_id run_id started_at finished_at status error model hf_id revision weights
params quant bits gpu_class emulated device_name device_total_bytes batch_size prompt_tokens
new_tokens weights_bytes peak_alloc_bytes peak_reserved_bytes peak_device_bytes context_bytes
peak_host_rss_bytes load_s ttft_ms prefill_tok_s decode_tok_s decode_ms_p50 decode_ms_p90
repeats compiled mmlu_acc mmlu_stderr mmlu_n mmlu_shots humaneval_pass1 humaneval_n eval_set
host git_sha python torch cuda driver transformers bitsandbytes gptqmodel lm_eval
config_yaml engine engine_version weights_origin schema_version ppl ppl_delta kld_mean
kld_median kld_p99 top1_agree quality_tokens mmlu_cloze_acc mmlu_subjects""".split()


def row(cell: str, run: str = "r1", **kw: object) -> ResultRow:
    return ResultRow(cell_id=cell, run_id=run, status="ok", model="m", quant="fp32",
                     started_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), **kw)


def test_schema_has_every_contract_column_in_order() -> None:
    assert list(COLUMNS[:len(CONTRACT)]) == CONTRACT


def test_row_round_trips_with_nulls_not_zeros(tmp_path: Path) -> None:
    path = write_row(row("a", weights_bytes=123, decode_tok_s=float("nan")), tmp_path)
    assert path == row_path(tmp_path, "r1", "a")
    table = pq.read_table(path)
    assert table.schema.equals(ARROW_SCHEMA)
    got = table.to_pylist()[0]
    assert got["weights_bytes"] == 123
    assert got["decode_tok_s"] is None  # NaN is not a measurement
    assert got["peak_device_bytes"] is None


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    write_row(row("a"), tmp_path)
    write_row(row("a", error="again"), tmp_path)  # replaced whole
    files = sorted(p.name for p in (tmp_path / "r1").iterdir())
    assert files == ["a.parquet"]
    assert existing_row(tmp_path, "r1", "a")["status"] == "ok"
    assert existing_row(tmp_path, "r1", "zzz") is None


def test_pandas_reads_the_directory_and_ignores_half_written_files(tmp_path: Path) -> None:
    write_row(row("a"), tmp_path)
    write_row(row("b", run="r2"), tmp_path)
    (tmp_path / "r1" / ".b.deadbeef.tmp").write_bytes(b"PAR1 half a file")
    df = pd.read_parquet(tmp_path)
    assert sorted(df["cell_id"]) == ["a", "b"]
    assert sorted(read_results(tmp_path)["cell_id"]) == ["a", "b"]


def test_reader_tolerates_extra_and_missing_columns(tmp_path: Path) -> None:
    write_row(row("a"), tmp_path)
    newer = pa.Table.from_pylist([{"cell_id": "b", "run_id": "r1", "status": "ok",
                                   "a_future_column": 1.5}])
    pq.write_table(newer, tmp_path / "r1" / "b.parquet")
    df = read_results(tmp_path)
    assert set(df["cell_id"]) == {"a", "b"}
    assert "a_future_column" in df.columns and "weights_bytes" in df.columns
    assert df.set_index("cell_id").loc["b", "model"] is None or pd.isna(
        df.set_index("cell_id").loc["b", "model"])


def test_invalid_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_row(ResultRow(cell_id="a", run_id="r", status="fine"), tmp_path)
    with pytest.raises(TypeError):
        ResultRow(not_a_column=1)  # type: ignore[call-arg]


def test_missing_results_dir_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchInputError, match="results_dir"):
        read_results(tmp_path / "nope")


V1_RESULTS = Path(__file__).parent / "data" / "v1-results"


def test_rows_written_before_the_engine_axis_are_migrated_not_dropped() -> None:
    """tests/data/v1-results holds an ok and an error row written by schema version 1."""
    df = read_results(V1_RESULTS)
    assert sorted(df["status"]) == ["error", "ok"]
    assert (df["schema_version"] == 1).all() and (df["engine"] == "hf").all()
    assert (df["engine_version"] == df["transformers"]).all()
    assert df["decode_tok_s"].notna().sum() == 1  # its figures are kept as written


def test_old_rows_keep_their_history_beside_todays(tmp_path: Path) -> None:
    import shutil

    from bench.report import build_report
    from bench.report.data import histories, load_rows

    results = tmp_path / "results"
    shutil.copytree(V1_RESULTS, results)
    old = next(r for r in load_rows(results) if r["status"] == "ok")
    fields = {k: v for k, v in old.items() if k in COLUMNS and k not in (
        "schema_version", "engine", "engine_version")}
    fields.update(run_id="v2-run", engine="hf", started_at=old["started_at"]
                  + dt.timedelta(days=1), finished_at=None)
    write_row(ResultRow(**fields), results)
    rows = load_rows(results)
    history = histories(rows)[(old["cell_id"], old["host"])]
    assert [r["run_id"] for r in history] == ["v1-fixture", "v2-run"]
    assert [r["schema_version"] for r in history] == [1, SCHEMA_VERSION]
    assert [r["task"] for r in history] == ["text-generation"] * 2
    report = build_report(results, tmp_path / "reports")
    assert report.regressions == []
    assert "v1-fixture → v2-run" in (tmp_path / "reports" / "history.md").read_text()


def test_rows_before_version_3_get_the_task_and_generic_accuracy(tmp_path: Path) -> None:
    """A version-2 row's mmlu_* / humaneval_* columns read as the generic maps too."""
    from bench.report.data import load_rows
    from tests.report_rows import write

    results = tmp_path / "results"
    write(results, schema_version=2, mmlu_acc=0.25, mmlu_stderr=0.018, mmlu_n=570,
          mmlu_cloze_acc=0.27, humaneval_pass1=0.0, humaneval_n=8)
    (row,) = load_rows(results)
    assert row["task"] == "text-generation" and row["schema_version"] == 2
    assert row["accuracy"] == {"mmlu/acc": 0.25, "mmlu_cloze/acc": 0.27,
                               "humaneval/pass@1": 0.0}
    assert row["accuracy_n"] == {"mmlu/acc": 570, "mmlu_cloze/acc": 570, "humaneval/pass@1": 8}
    assert row["accuracy_stderr"] == {"mmlu/acc": 0.018}


def test_a_renamed_column_reads_under_its_new_name(tmp_path: Path) -> None:
    """Version 3 called NVML's share of time kernels ran `gpu_util_pct`: such a file (the
    recorded nights of benchmarks/data are version 3) reads as gpu_kernel_time_pct."""
    from bench.report.data import load_rows

    night = next((REPO / "benchmarks" / "data" / "nights").rglob("*.parquet"))
    table = pq.read_table(night)
    assert "gpu_util_pct" in table.column_names and "gpu_kernel_time_pct" not in (
        table.column_names)
    table = table.drop_columns(["gpu_util_pct"]).append_column(
        "gpu_util_pct", pa.array([87.5] * table.num_rows, pa.float64()))
    (tmp_path / "r" / "old").mkdir(parents=True)
    pq.write_table(table, tmp_path / "r" / "old" / night.name)
    (row,) = load_rows(tmp_path / "r")
    assert row["gpu_kernel_time_pct"] == 87.5 and "gpu_util_pct" not in row
