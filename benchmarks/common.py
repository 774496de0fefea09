"""What the benchmark scripts share: run cells through `python -m bench` (the real path, each
cell in its own process) into a scratch results directory, state the machine's load, and
summarize repeated figures."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd


def sweep(overrides: Sequence[str], multirun: bool = True) -> pd.DataFrame:
    """The rows of one `python -m bench [-m] ...` run (report off), in a scratch directory."""
    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / "results"
        subprocess.run([sys.executable, "-m", "bench", *(["-m"] if multirun else []),
                        *overrides, f"results_dir={results}", "report=false", "run_id=bench"],
                       check=True, stdout=subprocess.DEVNULL)
        return pd.read_parquet(results)


def one_cell(overrides: Sequence[str]):  # -> a pandas row (namedtuple-like Series)
    """The row of one `python -m bench` cell; RuntimeError unless it is ok."""
    row = sweep(overrides, multirun=False).iloc[0]
    if row.status != "ok":
        raise RuntimeError(f"bench cell {' '.join(overrides)}: {row.status}: {row.error}")
    return row


def cell_config(overrides: Sequence[str]):  # -> bench.core.config.BenchConfig
    """The typed config of the one cell `overrides` describe (files, paths, settings)."""
    from bench.sweep.plan import make_plan

    (cell,) = make_plan(list(overrides))
    return cell.config


def load_line() -> str:
    """The 1/5/15-minute load averages: timings on shared cores are only meaningful with it."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


@dataclass(frozen=True)
class Spread:
    """A repeated figure: median, extremes and coefficient of variation."""
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def cv(self) -> float:
        """Sample stdev / mean (0 for fewer than two values)."""
        if len(self.values) < 2:
            return 0.0
        return statistics.stdev(self.values) / statistics.fmean(self.values)

    def text(self, digits: int = 3) -> str:
        return (f"{self.median:.{digits}f} (min {min(self.values):.{digits}f}, max "
                f"{max(self.values):.{digits}f}, CV {100 * self.cv:.1f} %, n={len(self.values)})")
