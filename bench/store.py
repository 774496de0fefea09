"""The Parquet results store: one file per finished cell, written atomically.

Layout: ``<results_dir>/<run_id>/<cell_id>.parquet``. A file is written under a dot-prefixed
temporary name (which pyarrow's dataset discovery ignores) and renamed into place, so a
reader never sees half a row, and concurrent writers (Hydra launchers on a cluster) never
collide: every cell owns its own path. ``pandas.read_parquet(results_dir)`` reads the lot.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.atomic import staged_file
from bench.errors import BenchInputError
from bench.schema import ARROW_SCHEMA, SCHEMA_VERSION, STATUSES, ResultRow


def row_path(results_dir: str | os.PathLike, run_id: str, cell_id: str) -> Path:
    return Path(results_dir) / run_id / f"{cell_id}.parquet"


def _clean(value: object) -> object:
    """NaN and inf are not measurements: store them as nulls."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_row(row: ResultRow, results_dir: str | os.PathLike) -> Path:
    """Write one row atomically; returns its final path."""
    if row.status not in STATUSES:
        raise ValueError(f"status={row.status!r} is not one of {STATUSES}")
    if not row.cell_id or not row.run_id:
        raise ValueError("a result row needs cell_id and run_id")
    if row.schema_version is None:
        row = dataclasses.replace(row, schema_version=SCHEMA_VERSION)
    record = {k: _clean(v) for k, v in dataclasses.asdict(row).items()}
    table = pa.Table.from_pylist([record], schema=ARROW_SCHEMA)
    final = row_path(results_dir, row.run_id, row.cell_id)
    with staged_file(final, fsync=True) as tmp:
        pq.write_table(table, tmp)
    return final


def migrate(table: pa.Table) -> pa.Table:
    """Rows of an older layout in today's terms (never dropped): a file without
    `schema_version` is version 1, written before the engine axis, when transformers ran
    every cell, so its engine is `hf` and its engine version the `transformers` column."""
    if "schema_version" in table.column_names:
        return table
    n = table.num_rows
    added = {"schema_version": pa.array([1] * n, pa.int64()),
             "engine": pa.array(["hf"] * n, pa.string()),
             "engine_version": (table.column("transformers").cast(pa.string())
                                if "transformers" in table.column_names
                                else pa.nulls(n, pa.string()))}
    for name, column in added.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return table


def _read(path: Path) -> pa.Table:
    return migrate(pq.read_table(path))


def result_files(results_dir: str | os.PathLike) -> list[Path]:
    """Every finished row file, in a stable order (temporary files excluded)."""
    root = Path(results_dir)
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))


def read_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All rows of every run and host, columns unified (older files lack newer columns)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise BenchInputError(f"results_dir={str(root)!r} does not exist; run a sweep first "
                              f"or pass results_dir=<a directory of Parquet rows>")
    tables = [_read(p) for p in result_files(root)]
    if not tables:
        return ARROW_SCHEMA.empty_table().to_pandas()
    schema = pa.unify_schemas([ARROW_SCHEMA, *(t.schema for t in tables)],
                              promote_options="permissive")
    unified = [t.select([n for n in t.column_names]).cast(
        pa.schema([schema.field(n) for n in t.column_names])) for t in tables]
    combined = pa.concat_tables(unified, promote_options="permissive")
    missing = [n for n in schema.names if n not in combined.column_names]
    for name in missing:
        combined = combined.append_column(schema.field(name),
                                          pa.nulls(combined.num_rows, schema.field(name).type))
    return combined.select(schema.names).to_pandas()


def existing_row(results_dir: str | os.PathLike, run_id: str,
                 cell_id: str) -> dict[str, object] | None:
    """The row this run already has for the cell, if any (for resume)."""
    path = row_path(results_dir, run_id, cell_id)
    if not path.exists():
        return None
    return _read(path).to_pylist()[0]


def run_rows(results_dir: str | os.PathLike, run_id: str) -> list[dict[str, object]]:
    """Every row already written for this run (one per cell)."""
    run_dir = Path(results_dir) / run_id
    if not run_dir.is_dir():
        return []
    return [_read(path).to_pylist()[0] for path in result_files(run_dir)]


def finished_statuses(results_dir: str | os.PathLike, run_id: str) -> dict[str, str]:
    """cell_id -> status of every row already written for this run (for resume)."""
    return {str(row["cell_id"]): str(row["status"]) for row in run_rows(results_dir, run_id)}
