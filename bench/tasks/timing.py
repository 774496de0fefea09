"""How many timed calls a speed figure rests on, whatever the task: pyperf's rule."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from bench.core.config import WorkloadConfig

T = TypeVar("T")


def repeat_timed(workload: WorkloadConfig, at_least: int, call: Callable[[], T],
                 seconds: Callable[[T], float]) -> tuple[list[T], float]:
    """`call` at least `at_least` times, more until `min_duration_s` of its own `seconds`
    were timed, at most `max_repeats` (pyperf's rule: enough calls, and enough time); the
    results and the wall time they took."""
    results: list[T] = []
    timed = 0.0
    start = time.perf_counter()
    while len(results) < at_least or (
            timed < workload.min_duration_s and len(results) < workload.max_repeats):
        result = call()
        results.append(result)
        timed += seconds(result)
    return results, time.perf_counter() - start
