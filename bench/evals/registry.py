"""The accuracy tasks eval settings can name: bench's own modules (bench.evals.accuracy:
tasks with code of their own) and conf/accuracy/'s files (tasks as data)."""

from __future__ import annotations

from bench.evals.base import AccuracyTask


def accuracy_tasks() -> dict[str, AccuracyTask]:
    """The registry: every module of bench.evals.accuracy with a TASK (tasks with code of
    their own: MMLU's offline group, HumanEval's sandbox), then every task of conf/accuracy/
    (tasks as data: bench.evals.data_tasks)."""
    import importlib
    import pkgutil

    from bench.evals import accuracy
    from bench.evals.data_tasks import conf_tasks

    found: dict[str, AccuracyTask] = {}
    for module in pkgutil.iter_modules(accuracy.__path__):
        task = getattr(importlib.import_module(f"{accuracy.__name__}.{module.name}"), "TASK",
                       None)
        if task is not None:
            found[task.name] = task
    found.update(conf_tasks())
    return found
