"""What the benchmark scripts share: run cells through `python -m bench` (the real path, each
cell in its own process) into a scratch results directory, and state the machine's load."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd


def sweep(overrides: Sequence[str]) -> pd.DataFrame:
    """The rows of one `python -m bench -m ...` run (report off), in a scratch directory."""
    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / "results"
        subprocess.run([sys.executable, "-m", "bench", "-m", *overrides,
                        f"results_dir={results}", "report=false", "run_id=bench"], check=True)
        return pd.read_parquet(results)


def load_line() -> str:
    """The 1/5/15-minute load averages: timings on shared cores are only meaningful with it."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"
