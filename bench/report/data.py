"""Result rows as plain Python records, and the few facts every table derives from a row.

The report works on lists of dicts rather than DataFrames: nulls become ``None`` (never NaN),
integers stay integers, and every ordering is an explicit sort key, so the same rows always
give the same tables, whatever order the files were read in.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import pyarrow as pa
import yaml

from bench.core.schema import ARROW_SCHEMA
from bench.results.store import map_column, read_results
from bench.tasks import Task, tasks

Row = dict[str, Any]

# Columns the report reads that may be absent from older (or newer) files: all-null then.
OPTIONAL_COLUMNS = ("offload",)
_INT_COLUMNS = frozenset(f.name for f in ARROW_SCHEMA if pa.types.is_integer(f.type))
_BOOL_COLUMNS = frozenset(f.name for f in ARROW_SCHEMA if pa.types.is_boolean(f.type))
_LIST_COLUMNS = frozenset(f.name for f in ARROW_SCHEMA if pa.types.is_list(f.type))
_MAP_COLUMNS = frozenset(f.name for f in ARROW_SCHEMA if pa.types.is_map(f.type))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _clean(name: str, value: Any) -> Any:
    """NaN/NaT -> None, numpy scalars -> Python, timestamps -> aware datetimes, list columns
    -> lists, map columns -> dicts."""
    if value is None:
        return None
    if name in _MAP_COLUMNS:
        return {k: _clean("", v) for k, v in value}
    if name in _LIST_COLUMNS:
        return [_clean("", v) for v in value]
    if hasattr(value, "to_pydatetime"):
        try:
            value = value.to_pydatetime()
        except ValueError:
            return None
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if name in _INT_COLUMNS and isinstance(value, float):
        return int(value)
    if (name in _BOOL_COLUMNS or name in OPTIONAL_COLUMNS) and not isinstance(value, bool):
        return bool(value)
    return value


def load_rows(results_dir: str | os.PathLike) -> list[Row]:
    """Every row of every run and host; optional columns missing from the files read as None."""
    df = read_results(results_dir)
    records = df.astype(object).where(df.notna(), None).to_dict("records")
    rows = [{k: _clean(k, v) for k, v in rec.items()} for rec in records]
    for row in rows:
        for name in OPTIONAL_COLUMNS:
            row.setdefault(name, None)
    return sorted(rows, key=order_key)


def _none_last(value: Any) -> tuple[int, Any]:
    return (1, "") if value is None else (0, value)


def order_key(row: Row) -> tuple[Any, ...]:
    """Chronological order of rows (started_at, then finished_at, run_id, host, cell_id)."""
    return (row.get("started_at") or _EPOCH, row.get("finished_at") or _EPOCH,
            str(row.get("run_id") or ""), str(row.get("host") or ""),
            str(row.get("cell_id") or ""))


def histories(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """(cell_id, host) -> its rows, oldest first: successive runs of one cell on one host."""
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in sorted(rows, key=order_key):
        out[(str(row.get("cell_id")), str(row.get("host") or ""))].append(row)
    return dict(sorted(out.items()))


def latest_rows(rows: Iterable[Row]) -> list[Row]:
    """The newest row of every cell on every host; older rows are its history."""
    return [hist[-1] for hist in histories(rows).values()]


def is_gpu(row: Row) -> bool:
    """Measured on a CUDA device (older rows without `device` are judged by the name)."""
    if row.get("device") is not None:
        return row["device"] == "cuda"
    name = row.get("device_name")
    return bool(name) and not str(name).lower().startswith("cpu")


def is_offload(row: Row) -> bool:
    """Part of the model sat in host RAM (offload=true; a diffusion cell's engine.offload)."""
    return bool(row.get("offload"))


@dataclass(frozen=True)
class Family:
    """Tasks the published tables put under one heading (each task declares its heading and
    its layout: bench.tasks)."""

    title: str
    tasks: tuple[str, ...]
    layout: str = "tokens"
    speed_column: str = "decode_tok_s"  # the column its speed is shown from
    speed_label: str = "Decode tok/s"

    @property
    def generates_tokens(self) -> bool:
        """Its rows have the token columns (tok/s, TTFT, KL, MMLU), not the image ones."""
        return self.layout == "tokens"


def _families() -> tuple[Family, ...]:
    """The registry's tasks grouped by their heading, in their report order."""
    titles: dict[str, list[Task]] = {}
    for declared in tasks().values():
        titles.setdefault(declared.family, []).append(declared)
    return tuple(Family(title, tuple(t.name for t in members), members[0].layout,
                        members[0].speed_column, members[0].speed_label)
                 for title, members in titles.items())


FAMILIES = _families()


def task_of(row: Row) -> str:
    """The row's task (rows written before the task axis were all text generation)."""
    return str(row.get("task") or "text-generation")


def _declared(row: Row) -> Optional[Task]:
    """The row's task as the registry declares it (None: a task not installed here)."""
    return tasks().get(task_of(row))


def is_text(row: Row) -> bool:
    """The task generates tokens: it has prompt/new tokens, tok/s, KV cache and KL columns
    (a task unknown here: as before the task axis, text)."""
    declared = _declared(row)
    return declared is None or declared.generates_tokens


def family_of(task: str) -> Family:
    """The family a task is listed under (an unknown task: with the LLMs, as before tasks)."""
    return next((f for f in FAMILIES if task in f.tasks), FAMILIES[0])


@functools.lru_cache(maxsize=1024)
def _engine_section(config_yaml: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return {}
    engine = data.get("engine") if isinstance(data, dict) else None
    return engine if isinstance(engine, dict) else {}


def engine_settings(row: Row) -> dict[str, Any]:
    """The row's engine settings as it ran (config_yaml's `engine:`), {} when not recorded."""
    return _engine_section(str(row.get("config_yaml") or ""))


MEMORY_SAVING = ("vae_tiling", "vae_slicing", "attention_slicing")


def memory_saving(row: Row) -> tuple[str, ...]:
    """The memory-saving modes a diffusion cell ran with, besides offload: each measures a
    different pipeline, so they are kept apart (offload is evidence of the same one)."""
    settings = engine_settings(row)
    return tuple(m for m in MEMORY_SAVING if settings.get(m))


def offload_mode(row: Row) -> str:
    """How a row offloaded: engine.offload (model, sequential) where the engine has modes,
    else 'on' / 'none' from the offload column."""
    mode = engine_settings(row).get("offload")
    if isinstance(mode, str):
        return mode
    return "on" if is_offload(row) else "none"


# Phases after memory and speed: a cell that stopped in one of them measured its memory and
# speed first, and those figures (and their verdict) stand.
LATER_PHASES = ("quality", "eval")


def measured_through_speed(row: Row) -> bool:
    """Memory and speed were measured: the row is ok, or it stopped in a later phase."""
    declared = _declared(row)
    speed = row.get(declared.speed_column if declared is not None else "decode_tok_s")
    return row.get("status") == "ok" or (
        row.get("status") in ("oom", "error", "timeout")
        and row.get("failed_phase") in LATER_PHASES and speed is not None)


def is_partial(row: Row) -> bool:
    """Memory and speed measured, a later phase (quality, accuracy) did not finish."""
    return row.get("status") != "ok" and measured_through_speed(row)


def device_peak(row: Row) -> tuple[Optional[int], str]:
    """(peak device bytes, source): what the model needs where the engine reserves more
    (vLLM: its peak less the KV cache beyond the workload's), NVML's per-process peak, else
    the allocator's reserved peak.

    The reserved peak misses the CUDA context, so it is flagged wherever it is used.
    """
    if row.get("device_need_bytes") is not None:
        return int(row["device_need_bytes"]), "need"
    if row.get("peak_device_bytes") is not None:
        return int(row["peak_device_bytes"]), "nvml"
    if row.get("peak_reserved_bytes") is not None:
        return int(row["peak_reserved_bytes"]), "reserved"
    return None, ""


def peak_unseen(row: Row, source: str) -> Optional[int]:
    """How much higher a row's true device peak may have been than the one used: what the
    NVML samples may have missed (`peak_device_unseen_bytes`; unmeasured: none, as where the
    engine allocates its buffers once, llama.cpp); None for the allocator's reserved peak,
    which misses the CUDA context and so bounds the peak from below only."""
    if source == "reserved":
        return None
    return int(row.get("peak_device_unseen_bytes") or 0)


def context_tokens(row: Row) -> Optional[int]:
    """Tokens held per sequence at the end of generation (prompt + new)."""
    if row.get("prompt_tokens") is None or row.get("new_tokens") is None:
        return None
    return int(row["prompt_tokens"]) + int(row["new_tokens"])


def concurrency_of(row: Row) -> int:
    """Clients at once (rows before the serving columns: one)."""
    return int(row.get("concurrency") or 1)


def image_workload(row: Row) -> str:
    """Resolution and denoising steps (and frames of a video): '512×512, 25 steps'."""
    def part(key: str) -> str:
        return "?" if row.get(key) is None else str(row[key])
    frames = f", {row['video_frames']} frames" if row.get("video_frames") else ""
    return f"{part('image_height')}×{part('image_width')}, {part('denoise_steps')} steps{frames}"


def workload_label(row: Row) -> str:
    """Batch, prompt and generated tokens (and clients, when several), or for an image task
    batch, resolution and steps: the workload every figure is stated at."""
    def part(key: str) -> str:
        return "?" if row.get(key) is None else str(row[key])
    if not is_text(row):
        return f"b{part('batch_size')} · {image_workload(row)}"
    clients = concurrency_of(row)
    return (f"b{part('batch_size')} · {part('prompt_tokens')}+{part('new_tokens')} tok"
            + (f" · {clients} clients" if clients > 1 else ""))


def pixels(row: Row) -> int:
    """Pixels per image (0 for a text row): an image task's workload size."""
    return int(row.get("image_height") or 0) * int(row.get("image_width") or 0)


_WORKLOAD_COLUMNS = ("batch_size", "prompt_tokens", "new_tokens", "image_height", "image_width",
                     "denoise_steps", "video_frames")


def workload_key(row: Row) -> tuple[Any, ...]:
    return (*(_none_last(row.get(k)) for k in _WORKLOAD_COLUMNS), concurrency_of(row))


def server_kind(row: Row) -> Optional[str]:
    """Which server an openai row went through: llama_cpp, vllm (started by bench), attached."""
    server = row.get("server")
    if row.get("engine") != "openai" or not server:
        return None
    first = str(server).split()[0]
    return "attached" if first == "attached:" else first


# the KV-cache type llama.cpp makes unless told otherwise (engine.kv_cache): rows at it
# read as the engine alone, as before the KV type was an axis; transformers' cache is at
# the scheme's dtype (its label says it)
DEFAULT_KV_CACHE_TYPE = "f16"
KV_AXIS_ENGINES = ("llamacpp", "openai")


def engine_of(row: Row) -> str:
    """The engine that ran the row (rows before the engine axis read as hf when migrated),
    with the server for engine=openai (`openai:vllm`) and a KV-cache type other than the
    default (`llamacpp kv=q8_0`): cells of one scheme at two KV types are two rows."""
    kind = server_kind(row)
    kv = row.get("kv_cache_type")
    return (str(row.get("engine") or "hf") + (f":{kind}" if kind else "")
            + (f" kv={kv}" if row.get("engine") in KV_AXIS_ENGINES and isinstance(kv, str)
               and kv != DEFAULT_KV_CACHE_TYPE else ""))


def scheme_label(row: Row) -> str:
    """The scheme, with the engine that ran it unless that is transformers (the default):
    `fp16`, `fp16 (llamacpp)`, `gguf-q4_k_m (llamacpp)`."""
    engine = engine_of(row)
    return f"{row.get('quant')}" + ("" if engine == "hf" else f" ({engine})")


def fallback_mark(row: Row) -> str:
    """What a scheme's name hides, wherever the name is shown: ` — 10 % Q4_K, falls back
    for 576-wide rows` when its own type holds less than half of the quantized weights."""
    fallback = row.get("quant_fallback")
    return f" — {fallback}" if fallback else ""


def types_label(row: Row) -> str:
    """Bits per weight and the largest tensor types, for a plot's point: `6.27 bpw: Q5_0 58
    %, Q8_0 22 %` (GGUF rows), `4.52 bpw` (others), or nothing."""
    bits = row.get("bits_per_weight")
    if bits is None:
        return ""
    largest = sorted(map_column(row, "tensor_types").items(), key=lambda kv: -kv[1])[:2]
    named = ", ".join(f"{name} {100 * share:.0f} %" for name, share in largest)
    return f"{bits:.2f} bpw" + (f": {named}" if named else "")


def model_key(row: Row) -> tuple[Any, ...]:
    """Sort order of tables: model, weights, engine, highest precision first, quant, workload."""
    bits = row.get("bits")
    return (str(row.get("model") or ""), str(row.get("weights") or ""), engine_of(row),
            -(bits if bits is not None else -1), str(row.get("quant") or ""),
            *workload_key(row))


def newest_first(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=order_key, reverse=True)


def one_line(text: Any, limit: int = 90) -> str:
    """A message shortened to one table-friendly line."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def distinct(rows: Iterable[Row], column: str) -> list[str]:
    """Sorted distinct non-null values of a column, as strings."""
    return sorted({str(r[column]) for r in rows if r.get(column) is not None})


# Other processes' average CPU use during the timed phase above which a row's speed is
# flagged: a quarter of a core taken from a cell that uses every core is a visible cost.
BUSY_CORES = 0.25


def foreign_cores(row: Row) -> Optional[float]:
    """Cores other processes used on average while the row was timed, None when unrecorded."""
    foreign, timed = row.get("foreign_cpu_s"), row.get("timed_s")
    if foreign is None or not timed:
        return None
    return float(foreign) / float(timed)


def busy_cores(row: Row) -> Optional[float]:
    """Other processes' cores when the row's speed was measured on a busy machine, else None."""
    cores = foreign_cores(row)
    return cores if cores is not None and cores > BUSY_CORES else None


def gpu_sharers(row: Row) -> Optional[int]:
    """Other processes on the GPU while the row was timed (or at its start), else None."""
    count = max(int(row.get("gpu_foreign_processes") or 0),
                int(row.get("gpu_others_at_start") or 0))
    return count or None


def busy_note(row: Row) -> Optional[str]:
    """'busy: …' when the row's speed was measured on a busy machine or a shared GPU, else
    None."""
    notes = []
    cores = busy_cores(row)
    if cores is not None:
        load = f", load {row['load_avg']:.1f}" if row.get("load_avg") is not None else ""
        notes.append(f"other processes used {cores:.2f} cores{load}")
    if (sharers := gpu_sharers(row)) is not None:
        notes.append(f"{sharers} other process(es) on the GPU")
    return f"busy: {'; '.join(notes)}" if notes else None
