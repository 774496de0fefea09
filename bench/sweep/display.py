"""The progress display: one line per phase change of each cell, and a result line.

It prints only when something happens (plus, on a terminal, a spinner refreshed twice a
second), so the parent stays idle while the child measures.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from rich.console import Console
from rich.status import Status

from bench.core.schema import ResultRow
from bench.sweep.cells import Cell

_STATUS_STYLE = {"ok": "green", "oom": "red", "error": "red", "timeout": "yellow",
                 "skipped": "dim"}


def _mib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def _num(value: Optional[float], unit: str) -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def _acc(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_words(fields: dict[str, Any]) -> str:
    """`MMLU 105/171 questions · ETA 1m05s` from an eval's progress report (bench.evals)."""
    done, total = fields["done"], fields.get("total")
    words = f"{fields['label']} {done:,}" + (f"/{total:,}" if total else "") + \
        f" {fields['unit']}"
    eta = fields.get("eta_s")
    return words + (f" · ETA {_duration(eta)}" if eta is not None else "")


class CellProgress:
    """Progress of cell i of n."""

    # without a terminal (a log file, CI), a progress line at most this often
    LOG_EVERY_S = 30.0

    def __init__(self, cell: Cell, index: int, total: Optional[int],
                 console: Optional[Console] = None, stage: str = "all") -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        c = cell.config
        of = f"/{total}" if total else ""
        self.label = (f"[{index}{of}] {c.model.name} · {c.quant.name} · {c.gpu.name}"
                      + (" · accuracy stage" if stage == "accuracy" else ""))
        self._start = time.monotonic()
        self._status: Optional[Status] = None
        self._phase = "start"
        self._stage = stage
        self._logged_at = -self.LOG_EVERY_S
        self._logged_label: Optional[str] = None

    def elapsed(self) -> str:
        return f"{time.monotonic() - self._start:6.1f}s"

    def __enter__(self) -> "CellProgress":
        self.console.print(f"{self.label} · start")
        if self.console.is_terminal:
            self._status = self.console.status(self.label, refresh_per_second=2)
            self._status.start()
        return self

    def phase(self, name: str) -> None:
        self._phase = name
        self.console.print(f"{self.label} · {name} · {self.elapsed()}")
        if self._status is not None:
            self._status.update(f"{self.label} · {name}")

    def progress(self, fields: dict[str, Any]) -> None:
        """Questions done of total and an ETA: the spinner's line on a terminal, else a line
        when a task starts and every LOG_EVERY_S seconds."""
        line = f"{self.label} · {self._phase} · {progress_words(fields)}"
        if self._status is not None:
            self._status.update(line)
        elif (time.monotonic() - self._logged_at >= self.LOG_EVERY_S
              or fields["label"] != self._logged_label):  # each task's start is shown
            self._logged_at, self._logged_label = time.monotonic(), fields["label"]
            self.console.print(f"{line} · {self.elapsed()}")

    def skipped_existing(self) -> None:
        self.console.print(f"{self.label} · " + ("nothing pending, skipped"
                                                  if self._stage == "accuracy"
                                                  else "already in this run, skipped"))

    def result(self, row: ResultRow, log_path: Optional[str] = None) -> None:
        style = _STATUS_STYLE.get(row.status or "", "")
        figures = (f"weights {_mib(row.weights_bytes)}, host peak {_mib(row.peak_host_rss_bytes)}"
                   f", device peak {_mib(row.peak_device_bytes)}, ttft {_num(row.ttft_ms, 'ms')}"
                   f", decode {_num(row.decode_tok_s, 'tok/s')}")
        if row.mmlu_acc is not None or row.humaneval_pass1 is not None:
            figures += (f", mmlu {_acc(row.mmlu_acc)} (n={row.mmlu_n}), humaneval pass@1 "
                        f"{_acc(row.humaneval_pass1)} (n={row.humaneval_n})")
        why = f" — {row.error} (log: {log_path})" if row.error else ""
        self.console.print(f"{self.label} · [{style}]{row.status}[/{style}] · {self.elapsed()}"
                           f" · {figures}{why}")

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
