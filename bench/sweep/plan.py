"""The plan: every cell of a sweep, composed and validated before any model loads.

Hydra's launchers run the cells (one job each); this module composes the same job configs
up front, with Hydra's own compose API and BasicSweeper's expansion rules, so that bad
input fails as one line before any work, ``dry_run=true`` can list the cells, and the
progress display knows n.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Iterable, Optional, Sequence

import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.core.config import BenchConfig
from bench.core.errors import BenchInputError, SchemeRefused
from bench.core.paths import CONF_DIR
from bench.core.toolchain import cuda_refusal
from bench.engines import (
    check_runs,
    engines_with_setting,
    quant_rules,
    resolve_auto,
    settings_classes,
)
from bench.sweep.cells import Cell
from bench.tasks import task_of, task_specific_keys, workload_readers

GROUPS = ("model", "quant", "gpu", "eval", "engine", "sweep")
DEFAULT_SWEEP = "default"


def new_run_id() -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(2)}"


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def parse_overrides(args: Sequence[str]) -> list[Override]:
    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(list(args))
    except OverrideParseException as exc:
        first = str(exc).strip().splitlines()[0]
        for arg in args:  # name the override that does not parse
            try:
                parser.parse_overrides([arg])
            except OverrideParseException:
                raise BenchInputError(f"malformed override {arg!r}: {first} (quote a value "
                                      f"holding = , [ ] or spaces: key='value')") from None
        raise BenchInputError(f"malformed override: {first}") from None


def _check_once(overrides: Iterable[Override]) -> None:
    """A key given twice on one command line is ambiguous (Hydra lets the last win)."""
    seen: dict[str, str] = {}
    for ov in overrides:
        key = ov.get_key_element().lstrip("+~")
        if key in seen:
            raise BenchInputError(f"{key} is given twice ({seen[key]} and {ov.input_line}): "
                                  f"give it once (several values: {key}=a,b with -m)")
        seen[key] = str(ov.input_line)


def _check_group_choices(overrides: Iterable[Override]) -> None:
    for ov in overrides:
        key = ov.get_key_element().lstrip("+~")
        if key not in GROUPS:
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [
            ov.get_value_element_as_str()]
        valid = choices(key)
        for value in values:
            if value not in valid:
                raise BenchInputError(f"{key}={value} is not a known choice; valid choices: "
                                      f"{', '.join(valid)}")


def with_default_sweep(args: Sequence[str]) -> list[str]:
    """`python -m bench` without a sweep runs the embedded default sweep."""
    if any(re.match(r"^\+?sweep=", a) for a in args):
        return list(args)
    return [f"+sweep={DEFAULT_SWEEP}", *args]


def _one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's messages span lines and chain causes: keep the useful part."""
    parts = []
    while exc is not None:
        text = str(exc).split("\n    full_key")[0]
        text = " ".join(text.split())
        if text and text not in parts:
            parts.append(text)
        exc = exc.__cause__
    return ": ".join(parts) or "invalid configuration"


_NOT_A_SETTING = re.compile(r"Key '(\w+)' not in '(\w+)'")


def _compose(overrides: Sequence[str], hydra_cfg: bool = False) -> DictConfig:
    try:
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=hydra_cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise BenchInputError(_engine_key_line(exc, overrides) or _one_line(exc)) from None
    except yaml.YAMLError as exc:  # a config file that is not YAML
        raise BenchInputError(_yaml_line(exc)) from None
    except UnicodeDecodeError as exc:  # a config file that is not text
        raise BenchInputError(_undecodable(exc)) from None


def _undecodable(exc: UnicodeDecodeError) -> str:
    """One line naming the conf file that is not UTF-8 (the decoder does not say which)."""
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as found:
            return f"{path} is not UTF-8 text ({found.reason} at byte {found.start})"
    return f"a file in {CONF_DIR} is not UTF-8 text ({exc.reason})"


def _engine_key_line(exc: BaseException, overrides: Sequence[str]) -> Optional[str]:
    """An engine.<key> the chosen engine has no setting for: which engines have it."""
    found = _NOT_A_SETTING.search(_one_line(exc))
    key = found.group(1) if found else None
    if key is None or not any(o.lstrip("+~").startswith(f"engine.{key}=") for o in overrides):
        return None
    engine = next((o.split("=", 1)[1] for o in reversed(overrides)
                   if o.lstrip("+").startswith("engine=")), "auto")
    owners = [e for e in engines_with_setting(key)]
    if engine == "auto":
        return (f"engine.{key} is a setting of engine={', '.join(owners)}: name the engine "
                f"(engine={owners[0] if owners else '...'}) to set it")
    return (f"engine.{key} is not a setting of engine={engine} (only of: "
            f"{', '.join(owners) or 'no engine'}); leave it unset")


def _yaml_line(exc: yaml.YAMLError) -> str:
    """One line: which conf file is not valid YAML, where, and why."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}:{mark.line + 1}" if mark is not None else "a file in conf/"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where} is not valid YAML: {problem}"


def _check_conf_dir() -> None:
    if not (CONF_DIR / "config.yaml").is_file():
        raise BenchInputError(f"BENCH_CONF_DIR={str(CONF_DIR)!r} holds no config.yaml: point it "
                              f"at bench's conf/ directory (or unset it)")


def _check_workload(cfg: BenchConfig) -> None:
    """A workload key another task reads is refused (it would be silently ignored); then the
    task's own checks (its image, its context)."""
    task = task_of(cfg)
    for key in sorted(task_specific_keys()):
        if getattr(cfg.workload, key) is not None and key not in task.workload_keys:
            raise BenchInputError(f"workload.{key} is not read by model={cfg.model.name} "
                                  f"(task {task.name}; only by: "
                                  f"{', '.join(workload_readers(key))})")
    task.check(cfg)


def register_configs() -> None:
    """Register the schemas so every YAML group file is checked against its dataclass: the
    whole config, and each engine's settings (conf/engine/<name>.yaml starts from
    `<name>_settings`)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="bench_schema", node=BenchConfig)
    for name, settings in settings_classes().items():
        store.store(group="engine", name=f"{name}_settings", node=settings)


def _check_accuracy_tasks(cfg: BenchConfig) -> None:
    """eval.tasks names registered accuracy tasks (bench.evals.accuracy)."""
    if not cfg.eval.tasks:
        return
    from bench.evals.registry import accuracy_tasks

    registry = accuracy_tasks()
    for task in cfg.eval.tasks:
        own_key = registry[task].configured_by if task in registry else None
        if own_key:
            raise BenchInputError(f"eval.tasks: {task} is set by {own_key}, not eval.tasks")
        if task not in registry:
            valid = ", ".join(n for n, t in registry.items() if not t.configured_by)
            raise BenchInputError(f"eval.tasks: {task!r} is not an accuracy task; valid "
                                  f"choices: {valid or 'none beyond eval.mmlu and eval.humaneval'}")


def to_bench_config(cfg: DictConfig) -> BenchConfig:
    """Typed, validated config of one job (the dataclasses' checks run here)."""
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise BenchInputError(_one_line(exc)) from None
    assert isinstance(obj, BenchConfig)
    task = task_of(obj)  # a known model.task, before anything else reads it
    obj = resolve_auto(obj, task.engine_tasks)
    obj.validate(quant_rules())
    _check_accuracy_tasks(obj)
    _check_workload(obj)
    check_runs(obj, task.engine_tasks)  # what the cell's engine can run (its capabilities)
    return obj


def job_overrides(args: Sequence[str]) -> list[list[str]]:
    """The override list of every job, expanded as Hydra's BasicSweeper expands them."""
    parsed = parse_overrides(args)
    _check_once(parsed)
    _check_group_choices(parsed)
    fixed = [a for a, ov in zip(args, parsed, strict=True) if not ov.is_sweep_override()]
    base = _compose(fixed, hydra_cfg=True)
    params = base.hydra.sweeper.get("params") or {}
    swept = [f"{k}={v}" for k, v in params.items()]
    parsed_all = parse_overrides([*swept, *args])
    _check_group_choices(parsed_all)
    try:
        batches = BasicSweeper.split_arguments(parsed_all, max_batch_size=None)
    except HydraException as exc:
        raise BenchInputError(_one_line(exc)) from None
    return [list(job) for job in batches[0]]


def _narrowing(args: Sequence[str]) -> list[str]:
    """The default sweep with a model or an engine named and no scheme: the overrides that
    keep the default's schemes they can run (`engine=llamacpp` alone measures its GGUF and
    float schemes; `model=tiny-sd`, a diffusion pipeline, its float and bitsandbytes ones)."""
    if f"+sweep={DEFAULT_SWEEP}" not in args or any(re.match(r"^\+?quant=", a) for a in args):
        return []
    return [a for a in args if re.match(r"^(engine|model)=", a)]


def make_plan(args: Sequence[str]) -> list[Cell]:
    """Compose and validate every cell; raises BenchInputError with one line on bad input."""
    register_configs()
    _check_conf_dir()
    narrow = _narrowing(args)
    left_out: list[str] = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cells = []
        for job in job_overrides(args):
            try:
                cfg = to_bench_config(_compose(job))
            except SchemeRefused:
                if not narrow:
                    raise
                left_out += [o.split("=", 1)[1] for o in job if o.startswith("quant=")]
                continue
            cells.append(Cell(cfg, tuple(job)))
    if left_out:
        named = " ".join(narrow)
        if not cells:
            raise BenchInputError(f"{named} runs none of the default sweep's schemes "
                                  f"({', '.join(left_out)}): name one with quant=")
        print(f"bench: {named} runs {len(cells)} cells of the default sweep; left out, as "
              f"it cannot run them: {', '.join(dict.fromkeys(left_out))}")
    if cells:
        refusal = cuda_refusal(c.config for c in cells)
        if refusal is not None:
            raise BenchInputError(refusal)
    return cells
