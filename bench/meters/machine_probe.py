"""How fast the machine itself is around the timed calls: a fixed memory-bound kernel (a
float32 matrix-vector product over 64 MiB, numpy), timed right before the first timed call
and right after the last. On shared hosts the same process runs ±10 % slower from one hour
to the next while nothing on this machine changed (other tenants of the host take memory
bandwidth and cores); decode is memory-bound too, so the regression test divides each run's
per-token intervals by its probe and compares what is left (bench.report.regressions)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Optional

from bench.meters import GENERATE, Meter, Report

ROWS, COLS = 2048, 8192  # 64 MiB of float32: beyond any L3 cache, as a model's weights are
RUNS = 7  # timed products on each side of the window
# Its own short-lived process: the 64 MiB must not count in the cell's host memory peaks.
_KERNEL = f"""
import json, time
import numpy as np
matrix = np.full(({ROWS}, {COLS}), 0.5, dtype=np.float32)
vector = np.full({COLS}, 0.25, dtype=np.float32)
matrix @ vector
out = []
for _ in range({RUNS}):
    start = time.perf_counter()
    matrix @ vector
    out.append((time.perf_counter() - start) * 1e3)
print(json.dumps(out))
"""


def probe_ms() -> Optional[list[float]]:
    """RUNS timings (ms) of the kernel, or None when its process failed."""
    try:
        done = subprocess.run([sys.executable, "-c", _KERNEL], capture_output=True, text=True,
                              timeout=60, check=True)
        return [float(x) for x in json.loads(done.stdout)]
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


class MachineProbeMeter(Meter):
    """machine_probe_ms: the median product time over RUNS before and RUNS after the timed
    calls. First among the cell's meters: it runs before the others open their window and
    after they close it (bench.meters.Meters closes in reverse), outside every timed figure."""

    def __init__(self, report: Report) -> None:
        super().__init__(report)
        self._before: Optional[list[float]] = None

    def open(self, kind: str) -> None:
        if kind == GENERATE:
            self._before = probe_ms()

    def close(self, kind: str, calls: int, tokens: int) -> None:
        after = probe_ms() if kind == GENERATE else None
        if self._before and after:
            self.report(machine_probe_ms=round(statistics.median(self._before + after), 4))
