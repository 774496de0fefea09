"""The Parquet results store: one file per finished cell, written atomically.

Layout: ``<results_dir>/<run_id>/<cell_id>.parquet``. A file is written under a dot-prefixed
temporary name (which pyarrow's dataset discovery ignores) and renamed into place, so a
reader never sees half a row, and concurrent writers (Hydra launchers on a cluster) never
collide: every cell owns its own path. ``pandas.read_parquet(results_dir)`` reads the lot.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.core.atomic import staged_file
from bench.core.errors import BenchInputError
from bench.core.paths import under
from bench.core.schema import ARROW_SCHEMA, RENAMED, SCHEMA_VERSION, STATUSES, ResultRow


def row_path(results_dir: str | os.PathLike, run_id: str, cell_id: str) -> Path:
    return under(results_dir, run_id, f"{cell_id}.parquet")


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
    """Rows of an older layout in today's terms (never dropped). A file without
    `schema_version` is version 1, written before the engine axis, when transformers ran
    every cell, so its engine is `hf` and its engine version the `transformers` column.
    Before version 3 every row was text generation, and its accuracy lived in the mmlu_* /
    humaneval_* columns alone: the generic maps are built from them (without per-item
    outcomes, which were not kept)."""
    n = table.num_rows
    if "schema_version" not in table.column_names:
        added = {"schema_version": pa.array([1] * n, pa.int64()),
                 "engine": pa.array(["hf"] * n, pa.string()),
                 "engine_version": (table.column("transformers").cast(pa.string())
                                    if "transformers" in table.column_names
                                    else pa.nulls(n, pa.string()))}
        table = _replace_columns(table, added)
    table = _renamed(table)
    versions = table.column("schema_version").to_pylist()
    if all(v is not None and v >= 3 for v in versions):
        return table
    rows = table.to_pylist()
    old = [v is None or v < 3 for v in versions]
    generic = {name: [] for name in _GENERIC}
    for row, is_old in zip(rows, old, strict=True):
        built = _generic_from_legacy(row) if is_old else {}
        for name in _GENERIC:
            value = row.get(name)
            generic[name].append(built.get(name) if is_old and value is None else value)
    task = [row.get("task") or ("text-generation" if is_old else None)
            for row, is_old in zip(rows, old, strict=True)]
    return _replace_columns(table, {
        "task": pa.array(task, pa.string()),
        **{name: pa.array(values, ARROW_SCHEMA.field(name).type)
           for name, values in generic.items()}})


def _renamed(table: pa.Table) -> pa.Table:
    """A renamed column's values under its new name (bench.core.schema.RENAMED)."""
    for renames in RENAMED.values():
        for old, new in renames.items():
            if old in table.column_names:
                values = table.column(old).cast(ARROW_SCHEMA.field(new).type)
                table = _replace_columns(table.drop_columns([old]), {new: values})
    return table


_GENERIC = ("accuracy", "accuracy_n", "accuracy_stderr")
# legacy columns -> (task/metric key, its n column, its stderr column)
_LEGACY = {"mmlu_acc": ("mmlu/acc", "mmlu_n", "mmlu_stderr"),
           "mmlu_cloze_acc": ("mmlu_cloze/acc", "mmlu_n", None),
           "humaneval_pass1": ("humaneval/pass@1", "humaneval_n", "humaneval_stderr")}


def _generic_from_legacy(row: dict) -> dict[str, Optional[list]]:
    """The generic maps (as Arrow map values: lists of pairs) of a row's legacy columns."""
    acc, n, err = [], [], []
    for column, (key, n_col, err_col) in _LEGACY.items():
        if row.get(column) is None:
            continue
        acc.append((key, float(row[column])))
        if row.get(n_col) is not None:
            n.append((key, int(row[n_col])))
        if err_col and row.get(err_col) is not None:
            err.append((key, float(row[err_col])))
    return {"accuracy": acc or None, "accuracy_n": n or None, "accuracy_stderr": err or None}


def _replace_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    for name, column in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return table


def result_files(results_dir: str | os.PathLike) -> list[Path]:
    """Every finished row file, in a stable order (temporary files excluded)."""
    root = Path(results_dir)
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))


_REQUIRED = ("cell_id", "run_id", "status")
SkipHandler = Callable[[Path, str], None]


def warn_skipped(path: Path, reason: str) -> None:
    print(f"bench: warning: skipped {path}: {reason}", file=sys.stderr)


def _brief(exc: BaseException) -> str:
    """An Arrow error's (multi-line) message on one short line."""
    return " ".join(str(exc).split())[:160]


def _row_table(path: Path) -> pa.Table | str:
    """A result file as a table in bench's column types, or why it is not one."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        return f"not a readable Parquet file ({_brief(exc)})"
    if not set(_REQUIRED) <= set(table.column_names):
        return f"not a bench result row (lacks {', '.join(_REQUIRED)})"
    table = migrate(table)
    clash = _type_clash(table)
    if clash is not None:
        return f"its column types clash with bench's schema ({clash})"
    try:
        return table.cast(pa.schema([ARROW_SCHEMA.field(n) if n in ARROW_SCHEMA.names
                                     else table.schema.field(n) for n in table.column_names]))
    except (pa.ArrowException, ValueError) as exc:
        return f"its column types clash with bench's schema ({_brief(exc)})"


def _family(t: pa.DataType) -> str:
    """What kind of value a type holds; a cast within a kind (int32 -> int64, an int into a
    float column) keeps the meaning, a cast across kinds (an integer status to a string)
    would read a foreign table as if it were bench's."""
    for name, test in (("null", pa.types.is_null), ("bool", pa.types.is_boolean),
                       ("number", lambda x: pa.types.is_integer(x) or pa.types.is_floating(x)),
                       ("text", lambda x: pa.types.is_string(x) or pa.types.is_large_string(x)),
                       ("time", pa.types.is_timestamp), ("list", pa.types.is_list),
                       ("map", pa.types.is_map), ("dict", pa.types.is_dictionary)):
        if test(t):
            return name
    return str(t)


def _type_clash(table: pa.Table) -> Optional[str]:
    """The first column whose kind differs from bench's schema, or None."""
    for name in table.column_names:
        if name not in ARROW_SCHEMA.names:
            continue
        have, want = table.schema.field(name).type, ARROW_SCHEMA.field(name).type
        if pa.types.is_dictionary(have):
            have = have.value_type
        if _family(have) not in ("null", _family(want)):
            return f"{name} is {have}, bench's is {want}"
    return None


def _readable(paths: list[Path], on_skip: SkipHandler) -> list[pa.Table]:
    """The tables of the files that are bench rows; each other file is named (on_skip)."""
    tables = []
    for path in paths:
        table = _row_table(path)
        if isinstance(table, str):
            on_skip(path, table)
        else:
            tables.append(table)
    return tables


def existing_results_dir(results_dir: str | os.PathLike) -> Path:
    """The results directory to read, or BenchInputError saying it does not exist."""
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise BenchInputError(f"results_dir={str(root)!r} is a file, not a directory of "
                              f"Parquet rows")
    if not root.is_dir():
        raise BenchInputError(f"results_dir={str(root)!r} does not exist; run a sweep first "
                              f"or pass results_dir=<a directory of Parquet rows>")
    return root


def read_results(results_dir: str | os.PathLike,
                 on_skip: SkipHandler = warn_skipped) -> pd.DataFrame:
    """All rows of every run and host, columns unified (older files lack newer columns).
    Read file by file: a truncated, foreign or clashing file is skipped and named (on_skip),
    the rest are reported."""
    tables = _readable(result_files(existing_results_dir(results_dir)), on_skip)
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
    table = _row_table(path)
    if isinstance(table, str):  # measured again, and the bad file replaced
        warn_skipped(path, table)
        return None
    return table.to_pylist()[0]


def map_column(row: dict[str, Any], column: str) -> dict[str, Any]:
    """A map column as a dict: Arrow reads a map back as (key, value) pairs; {} when null."""
    value = row.get(column)
    if isinstance(value, list):
        return dict(value)
    return dict(value.items()) if hasattr(value, "items") else {}


def run_rows(results_dir: str | os.PathLike, run_id: str) -> list[dict[str, object]]:
    """Every row already written for this run (one per cell)."""
    run_dir = under(results_dir, run_id)
    if not run_dir.is_dir():
        return []
    return [t.to_pylist()[0] for t in _readable(result_files(run_dir), warn_skipped)]


def remove_stale_temp_files(results_dir: str | os.PathLike, run_id: str) -> list[Path]:
    """Temporary files a killed writer left in this run's directory (a run is written by
    one sweep at a time)."""
    run_dir = under(results_dir, run_id)
    stale = sorted(run_dir.glob(".*.tmp")) if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def finished_statuses(results_dir: str | os.PathLike, run_id: str) -> dict[str, str]:
    """cell_id -> status of every row already written for this run (for resume)."""
    return {str(row["cell_id"]): str(row["status"]) for row in run_rows(results_dir, run_id)}


@contextmanager
def run_lock(results_dir: str | os.PathLike, run_id: str) -> Iterator[None]:
    """Hold the run's lock while a sweep writes it: a second sweep writing the same run_id
    into the same results directory is refused (BenchInputError) instead of measuring both
    under each other's load. The kernel releases it if the sweep dies."""
    path = under(results_dir, run_id, ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BenchInputError(f"run_id={run_id} in results_dir={str(results_dir)!r} is being "
                                  f"written by another sweep ({holder}); wait for it, or pick "
                                  f"another run_id") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
