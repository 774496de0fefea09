"""The transformers engine (in process): every scheme transformers and its quantization
libraries apply (bnb, torchao, HQQ, GPTQ/AWQ through gptqmodel), on CPU or CUDA.

This package's __init__ is what the plan and the parent import: capabilities as data, and
whether a cell has an untimed asset to build. The engine itself is bench.engines.hf.engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.engines.base import Capabilities

if TYPE_CHECKING:
    from bench.config import BenchConfig

CAPABILITIES = Capabilities(
    name="hf",
    quant_methods=("none", "bnb", "gptq", "awq", "torchao", "hqq"),
    devices=("cpu", "cuda"),
    weights=("real", "synthetic", "tiny", "packaged"),
    token_clock=True,
    allocator_peaks=True,
    offload=True,
    compile=True,
    max_batch_size=None,
    synthetic_model_types=None,
    kv_cache_dtype=None,
    distribution="transformers",
    context_at_start=True,
)


def needs_preparing(cfg: "BenchConfig") -> bool:
    """What is made untimed, in a process of its own, under the prepare deadline: the tiny
    model (built and trained), a packaged GGUF converted to a checkpoint, a hub checkpoint's
    download (cached by the hub library: a quick check once it is there), a GPTQ/AWQ
    calibration (cached by bench) or the published pre-quantized checkpoint's download."""
    from pathlib import Path

    from bench.sources.packaged import is_converted
    from bench.sources.tiny import is_built

    weights, cache = cfg.resolved_weights, cfg.resolved_cache_dir
    if cfg.quant.method in ("gptq", "awq"):
        return True
    if weights == "real":
        return not Path(str(cfg.model.hf_id)).is_dir()
    return ((weights == "tiny" and not is_built(cfg.model, cache))
            or (weights == "packaged" and not is_converted(cfg.model, cache)))
