"""The engines: a lazy registry of names, what each declares, and the plan-time check.

An engine is a package: its light `__init__` declares `CAPABILITIES` (what it runs and
measures), `SETTINGS` (its settings dataclass, conf/engine/<name>.yaml), `QUANT_RULES` (the
quantization methods it owns, optional), `needs_preparing` (parent side, no heavy import)
and optionally `check_runs`; `<package>.engine.ENGINE` is the engine itself, imported only in
the cell's child process that uses it, as lm-eval's registry does for its models. The
registry is every package under bench/engines/ plus those that installed packages name
under the `bench.engines` entry-point group: adding an engine touches its own package and
its conf file, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Optional

from bench.core.errors import BenchInputError, SchemeRefused
from bench.engines.base import EngineSettings

if TYPE_CHECKING:
    from bench.core.config import BenchConfig, QuantRule
    from bench.engines.base import Capabilities, Engine

AUTO = "auto"


@dataclass
class AutoSettings(EngineSettings):
    """engine=auto: each scheme on the engine that declares itself its default
    (Capabilities.default_for); the plan replaces it with that engine's settings."""

    name: str = AUTO


@lru_cache(maxsize=1)
def engines() -> dict[str, str]:
    """Engine name -> its package: bench's own, then installed plugins'."""
    found = {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)
             if m.ispkg}
    for point in entry_points(group="bench.engines"):
        found[point.name] = point.value
    return found


def _package(name: str) -> ModuleType:
    known = engines()
    if name not in known:
        raise BenchInputError(f"engine={name!r} is not valid; valid choices: "
                              f"{', '.join([AUTO, *known])}")
    return importlib.import_module(known[name])


def capabilities(name: str) -> "Capabilities":
    return _package(name).CAPABILITIES


def settings_classes() -> dict[str, type[EngineSettings]]:
    """Each engine's settings dataclass (and auto's), for Hydra's ConfigStore."""
    return {AUTO: AutoSettings, **{name: _package(name).SETTINGS for name in engines()}}


def quant_rules() -> dict[str, "QuantRule"]:
    """The quantization methods the engines own, with their rules."""
    rules: dict[str, QuantRule] = {}
    for name in engines():
        rules.update(getattr(_package(name), "QUANT_RULES", {}))
    return rules


def _runs(caps: "Capabilities", engine_tasks: tuple[str, ...]) -> bool:
    """Whether an engine runs a task's models (it declares one of the task's engine tasks)."""
    return any(t in caps.tasks for t in engine_tasks)


def default_engine(method: str, engine_tasks: tuple[str, ...] = ("text-generation",),
                   scheme: Optional[str] = None, task: Optional[str] = None) -> str:
    """The engine engine=auto runs a quantization method on, for a task whose models the
    engines declaring one of `engine_tasks` run."""
    task = task or engine_tasks[0]
    for name in engines():
        caps = capabilities(name)
        if _runs(caps, engine_tasks) and method in caps.default_for:
            return name
    what = f"quant={scheme}" if scheme else f"quant.method={method!r}"
    runs = [n for n in engines() if _runs(capabilities(n), engine_tasks)]
    schemes = _schemes(tuple(m for n in runs for m in capabilities(n).quant_methods))
    raise SchemeRefused(f"{what} has no engine for task {task}; task {task} runs: "
                        f"{schemes or 'no scheme yet'}")


def resolve_auto(cfg: "BenchConfig", engine_tasks: tuple[str, ...]) -> "BenchConfig":
    """engine=auto replaced by the default settings of the scheme's own engine."""
    import dataclasses

    if cfg.engine.name != AUTO:
        return cfg
    name = default_engine(cfg.quant.method, engine_tasks, cfg.quant.name, cfg.model.task)
    return dataclasses.replace(cfg, engine=_package(name).SETTINGS())


def engines_with_setting(key: str) -> list[str]:
    """The engines whose settings have `key` (for the message refusing it elsewhere)."""
    import dataclasses

    return [name for name, cls in settings_classes().items()
            if key in {f.name for f in dataclasses.fields(cls)}]


def load_engine(name: str) -> "Engine":
    """The engine object (imports its library: call it in the cell's process only)."""
    capabilities(name)
    return importlib.import_module(f"{engines()[name]}.engine").ENGINE


def needs_preparing(cfg: "BenchConfig") -> bool:
    """Whether the cell's engine has an untimed asset to build first (parent side: no heavy
    import)."""
    return bool(_package(cfg.resolved_engine).needs_preparing(cfg))


def _schemes(methods: tuple[str, ...]) -> str:
    """conf/quant names of the given methods, for the refusal message."""
    import yaml

    from bench.core.paths import CONF_DIR

    names = []
    for path in sorted((CONF_DIR / "quant").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if data.get("method", "none") in methods:
            names.append(path.stem)
    return ", ".join(names)


def check_runs(cfg: "BenchConfig", engine_tasks: tuple[str, ...]) -> None:
    """Refuse, in one line, a cell its engine cannot run (before anything loads);
    `engine_tasks`: the engine tasks whose engines run the cell's model task."""
    name = cfg.resolved_engine
    caps = capabilities(name)
    if not _runs(caps, engine_tasks):
        runs = [e for e in engines() if _runs(capabilities(e), engine_tasks)]
        raise BenchInputError(
            f"engine={name} cannot run model={cfg.model.name} (task {cfg.model.task}); "
            f"engine={name} runs: {', '.join(caps.tasks)}"
            f"{f' ({caps.other_tasks_note})' if caps.other_tasks_note else ''}; task "
            f"{cfg.model.task} runs on: {', '.join(runs) or 'no engine yet'}")
    if cfg.quant.method not in caps.quant_methods:
        raise SchemeRefused(
            f"engine={name} cannot run quant={cfg.quant.name} (method {cfg.quant.method}); "
            f"engine={name} runs: {_schemes(caps.quant_methods)} (leave engine unset to run "
            f"each scheme on its own engine)")
    if cfg.cell.device != "auto" and cfg.cell.device not in caps.devices:
        raise BenchInputError(f"cell.device={cfg.cell.device} is not supported by engine="
                              f"{name}; valid: auto, {', '.join(caps.devices)}")
    weights = cfg.resolved_weights
    if weights not in caps.weights:
        raise BenchInputError(f"weights={weights} is not supported by engine={name}; valid: "
                              f"{', '.join(caps.weights)}")
    types = caps.synthetic_model_types
    if weights == "synthetic" and types is not None and cfg.model.arch.model_type not in types:
        raise BenchInputError(
            f"engine={name} builds synthetic weights for model types {', '.join(types)} only; "
            f"model={cfg.model.name} is {cfg.model.arch.model_type} (use weights=real)")
    if cfg.cell.compile and not caps.compile:
        raise BenchInputError(f"cell.compile=true is not supported by engine={name}")
    if cfg.offload and not caps.offload:
        raise BenchInputError(f"offload=true is not supported by engine={name} (llama.cpp "
                              f"offloads by layer: set engine.n_gpu_layers)")
    if caps.max_batch_size is not None and cfg.workload.batch_size > caps.max_batch_size:
        raise BenchInputError(f"workload.batch_size={cfg.workload.batch_size} is not supported "
                              f"by engine={name}; valid: 1..{caps.max_batch_size}")
    if caps.max_concurrency is not None and cfg.workload.concurrency > caps.max_concurrency:
        raise BenchInputError(f"workload.concurrency={cfg.workload.concurrency} is not supported "
                              f"by engine={name} (in process, one sequence at a time); valid: "
                              f"1..{caps.max_concurrency}; servers (engine=openai) take more")
    if cfg.workload.depths and not caps.speed_at_depth:
        raise BenchInputError(f"workload.depths is not supported by engine={name} (speed at "
                              f"depth: engines hf, llamacpp)")
    check = getattr(_package(name), "check_runs", None)
    if check is not None:  # what only the engine knows (which server runs which scheme)
        check(cfg)
