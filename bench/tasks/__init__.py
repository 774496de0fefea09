"""The model tasks: a registry of names, each a package declaring its `TASKS`.

A task is a package under bench/tasks/ (or an installed package naming it in the
`bench.tasks` entry-point group): its light `__init__` defines `TASKS`, a tuple of
bench.tasks.base.Task objects (what each one's workload is, how it is checked, named and
measured). The plan, the runner, the cell, the identity and the report ask this registry;
adding a model task touches its own package, its conf/model files and its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from bench.core.errors import BenchInputError
from bench.tasks.base import Speed, Task

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

__all__ = ["Speed", "Task", "task", "task_of", "tasks", "workload_readers"]


@lru_cache(maxsize=1)
def tasks() -> dict[str, Task]:
    """Task name -> its declaration: bench's own packages, then installed plugins'."""
    modules = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.ispkg]
    modules += [point.value for point in entry_points(group="bench.tasks")]
    found: dict[str, Task] = {}
    for module in modules:
        for declared in getattr(importlib.import_module(module), "TASKS", ()):
            found[declared.name] = declared
    return dict(sorted(found.items(), key=lambda kv: (kv[1].report_rank, kv[0])))


def task(name: Any) -> Task:
    """The task called `name`; one line naming the valid ones when there is none."""
    known = tasks()
    if name not in known:
        raise BenchInputError(f"model.task={name!r} is not valid; valid choices: "
                              f"{', '.join(known)}")
    return known[name]


def task_of(cfg: "BenchConfig") -> Task:
    return task(cfg.model.task)


def workload_readers(key: str) -> list[str]:
    """The tasks whose workload reads `key` (a task-specific workload key)."""
    return [name for name, t in tasks().items() if key in t.workload_keys]


def task_specific_keys() -> frozenset[str]:
    """Every workload key some task reads beyond the common ones."""
    return frozenset(k for t in tasks().values() for k in t.workload_keys)
