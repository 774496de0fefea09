"""The engines: a lazy registry of names, their declared capabilities, and the plan-time check.

Importing bench (the plan, the parent, the report) never imports an engine's library: a
name maps to a light package that declares `CAPABILITIES` (and the parent-side
`needs_preparing`), and the engine class itself (`<package>.engine.ENGINE`) is imported only
in the cell's child process that uses it, as lm-eval's registry does for its models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bench.errors import BenchInputError

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.engines.base import Capabilities, Engine

ENGINES: dict[str, str] = {"hf": "bench.engines.hf", "llamacpp": "bench.engines.llamacpp",
                           "openai": "bench.engines.openai"}


def capabilities(name: str) -> "Capabilities":
    if name not in ENGINES:
        raise BenchInputError(f"engine={name!r} is not valid; valid choices: "
                              f"{', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name]).CAPABILITIES


def load_engine(name: str) -> "Engine":
    """The engine object (imports its library: call it in the cell's process only)."""
    capabilities(name)
    return importlib.import_module(f"{ENGINES[name]}.engine").ENGINE


def needs_preparing(cfg: "BenchConfig") -> bool:
    """Whether the cell's engine has an untimed asset to build first (parent side: no heavy
    import)."""
    return bool(importlib.import_module(ENGINES[cfg.resolved_engine]).needs_preparing(cfg))


def _schemes(methods: tuple[str, ...]) -> str:
    """conf/quant names of the given methods, for the refusal message."""
    import yaml

    from bench.paths import CONF_DIR

    names = []
    for path in sorted((CONF_DIR / "quant").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if data.get("method", "none") in methods:
            names.append(path.stem)
    return ", ".join(names)


def check_runs(cfg: "BenchConfig") -> None:
    """Refuse, in one line, a cell its engine cannot run (before anything loads)."""
    name = cfg.resolved_engine
    caps = capabilities(name)
    if cfg.quant.method not in caps.quant_methods:
        raise BenchInputError(
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
    check = getattr(importlib.import_module(ENGINES[name]), "check_runs", None)
    if check is not None:  # what only the engine knows (which server runs which scheme)
        check(cfg)
