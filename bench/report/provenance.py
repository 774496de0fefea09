"""Where every figure came from: per-row source anchors and a per-table "built from" list.

Each table row links to numbered source entries (``[3](#src-3)``) that name the run, host,
device (and the class it was capped to when emulated), status, cell and software versions,
so a reader can find the Parquet file (``results/<run_id>/<cell_id>.parquet``) behind it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from bench.report.data import Row, distinct, one_line
from bench.report.fmt import bullet_list, plain

VERSION_COLUMNS = ("torch", "transformers", "bitsandbytes", "cuda", "driver")


def device_text(row: Row) -> str:
    """The device measured on, marked when an allocator cap emulated a smaller class."""
    name = str(row.get("device_name") or "device unknown")
    if row.get("emulated"):
        name += f" (emulated {row.get('gpu_class')}: allocator capped)"
    if row.get("offload"):
        name += " [offload]"
    return name


def _versions(row: Row) -> str:
    parts = [f"{c} {row[c]}" for c in VERSION_COLUMNS if row.get(c) is not None]
    return ", ".join(parts) if parts else "versions not recorded"


def describe(row: Row) -> str:
    """One line naming everything needed to find and judge a result row."""
    status = str(row.get("status"))
    if row.get("error"):
        status += f": {one_line(row['error'], 300)}"
    started = row.get("started_at")
    when = started.strftime("%Y-%m-%d %H:%M:%SZ") if started else "time not recorded"
    return plain(
        f'run `{row.get("run_id")}` · host `{row.get("host")}` · {device_text(row)} · '
        f'gpu class `{row.get("gpu_class")}` · status {status} · started {when} · '
        f'cell `{row.get("cell_id")}` · git `{row.get("git_sha")}` · {_versions(row)}')


class Sources:
    """Numbers source rows in order of first use; one instance per report file."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str, str], int] = {}
        self._rows: list[Row] = []

    @staticmethod
    def _key(row: Row) -> tuple[str, str, str]:
        return (str(row.get("run_id")), str(row.get("host")), str(row.get("cell_id")))

    def ref(self, row: Row) -> str:
        """A markdown link to the row's source entry, registering it on first use."""
        key = self._key(row)
        if key not in self._ids:
            self._ids[key] = len(self._rows) + 1
            self._rows.append(row)
        n = self._ids[key]
        return f"[{n}](#src-{n})"

    def refs(self, rows: Iterable[Row]) -> str:
        return " ".join(self.ref(r) for r in rows)

    @property
    def rows(self) -> list[Row]:
        return list(self._rows)

    def render(self) -> str:
        """The numbered list every table row links to (empty when nothing was referenced)."""
        return bullet_list([f'<a id="src-{n}"></a>**[{n}]** {describe(row)}'
                            for n, row in enumerate(self._rows, start=1)])


def built_from(rows: Sequence[Row]) -> str:
    """The runs, hosts, GPUs and software versions a table was built from."""
    if not rows:
        return "Built from no result rows."
    emulated = sum(1 for r in rows if r.get("emulated"))
    items = [f"rows: {len(rows)} ({emulated} measured under an allocator cap, marked "
             f"'emulated')"]
    for column, label in (("run_id", "runs"), ("host", "hosts"), ("device_name", "devices"),
                          ("git_sha", "bench commits"), ("python", "python"),
                          *((c, c) for c in VERSION_COLUMNS)):
        values = distinct(rows, column)
        items.append(f"{label}: {', '.join(f'`{v}`' for v in values) if values else 'n/a'}")
    return "Built from:\n\n" + bullet_list(items)


def sources_section(sources: Sources) -> str:
    text = sources.render()
    return f"### Sources\n\n{text}\n" if text else ""
