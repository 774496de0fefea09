"""A cell's identity: the stable hashes that key resume, history and accuracy reuse.

`cell_id` hashes what a measurement depends on (model, weights, scheme, engine, GPU class,
workload, eval settings), never where results go nor how often a speed is timed. Adding a
setting to bench must not reset anyone's history, so a config field joins the hash only
when it differs from its default, except the fields identity version 1 hashed (the config
as it stood before the engine axis): those stay in, whatever their value, so every cell
measured before keeps its id. tests/data/cell_ids_v1.json pins the ids of the default,
llama2 and seeds sweeps as that version computed them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from bench.core.config import BenchConfig, field_default
from bench.core.secrets import strip_credentials

# The fields each config class had when identity version 1 hashed it whole (asdict).
V1_FIELDS: dict[str, frozenset[str]] = {
    "ModelConfig": frozenset({"name", "hf_id", "revision", "default_weights", "arch", "tiny",
                              "trust_remote_code"}),
    "ArchFacts": frozenset({"model_type", "num_hidden_layers", "hidden_size",
                            "num_attention_heads", "num_key_value_heads", "vocab_size",
                            "intermediate_size", "max_position_embeddings", "params",
                            "tie_word_embeddings", "rms_norm_eps", "rope_theta",
                            "config_overrides"}),
    "TinyTraining": frozenset({"seed", "steps", "batch_size", "lr"}),
    "QuantConfig": frozenset({"name", "method", "bits", "dtype", "requires_cuda",
                              "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
                              "llm_int8_threshold", "group_size", "desc_act", "sym", "kernel",
                              "calibration_dataset", "calibration_samples",
                              "calibration_seq_len", "prequantized", "torchao_kind",
                              "hqq_axis"}),
    "WorkloadConfig": frozenset({"batch_size", "prompt_tokens", "new_tokens", "warmup_runs",
                                 "repeats", "min_duration_s", "max_repeats"}),
    "EvalConfig": frozenset({"name", "mmlu", "mmlu_shots", "mmlu_limit", "humaneval",
                             "humaneval_limit", "humaneval_max_new_tokens",
                             "humaneval_timeout_s", "batch_size", "allow_code_execution"}),
}
# How a speed figure is taken, not what is measured: a better procedure must not split a
# cell's history (nor re-measure a resumed run). Hashed at version 1's defaults whatever
# their value, so the ids of cells measured with the old defaults do not change.
V1_PROCEDURE: dict[str, object] = {"warmup_runs": 1, "repeats": 3, "min_duration_s": 0.0,
                                   "max_repeats": 20}
PROCEDURE_FIELDS = frozenset({*V1_PROCEDURE, "warmup_until_steady", "steady_tolerance",
                              "max_warmup_runs", "cuda_clock", "requests"})
# Engine settings that say how long to wait, not what is measured.
ENGINE_PATIENCE = ("startup_timeout_s", "request_timeout_s")
# The engine every version-1 cell ran on: its name joins the hash only for other engines.
V1_ENGINE = "hf"


def section(obj: Any) -> dict[str, Any]:
    """A config dataclass as identity: v1 fields always, later ones only when not default."""
    kept = V1_FIELDS.get(type(obj).__name__, frozenset())
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        plain = section(value) if dataclasses.is_dataclass(value) else value
        if f.name in kept or value != field_default(f):
            out[f.name] = plain
    return out


def _digest(identity: dict[str, object]) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _engine(cfg: BenchConfig) -> dict[str, object]:
    """How the model is run: v1's keys, then the engine and its settings when not v1's."""
    out: dict[str, object] = {"compile": cfg.cell.compile, "device": cfg.cell.device}
    if cfg.offload:  # joined the identity only when on, so ids of earlier runs stay the same
        out["offload"] = True
    settings = section(cfg.engine)
    settings.pop("name", None)  # `auto` and the name it resolves to are the same cell
    if settings.get("url"):  # a changed password is the same server
        settings["url"] = strip_credentials(settings["url"])
    for key in ENGINE_PATIENCE:
        settings.pop(key, None)
    if cfg.resolved_engine != V1_ENGINE:
        out["name"] = cfg.resolved_engine
    return {**out, **settings}


def _weights(cfg: BenchConfig) -> dict[str, object]:
    """What the model's outputs depend on: its weights, scheme and engine."""
    return {"model": section(cfg.model), "weights": cfg.resolved_weights,
            "quant": section(cfg.quant), "engine": _engine(cfg), "seed": cfg.seed}


def cell_id(cfg: BenchConfig) -> str:
    """Stable hash of what the measurement depends on (not of where results are written)."""
    workload = {k: v for k, v in section(cfg.workload).items() if k not in PROCEDURE_FIELDS}
    return _digest({**_weights(cfg), "gpu": cfg.gpu.name,
                    "workload": {**workload, **V1_PROCEDURE}, "eval": section(cfg.eval)})


def accuracy_key(cfg: BenchConfig) -> str:
    """Hash of what accuracy depends on: the cell's identity without GPU class and workload
    (accuracy is evaluated by lm-eval's own requests, whatever the speed workload)."""
    return _digest({**_weights(cfg), "eval": section(cfg.eval)})
