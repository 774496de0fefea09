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
    class_emulation=True,
    offload=True,
    compile=True,
    max_batch_size=None,
    synthetic_model_types=None,
    kv_cache_dtype=None,
    distribution="transformers",
)


def needs_preparing(cfg: "BenchConfig") -> bool:
    """The tiny model is built (and trained), a packaged GGUF converted to a checkpoint,
    untimed, in a process of its own."""
    from bench.sources.packaged import is_converted
    from bench.sources.tiny import is_built

    weights, cache = cfg.resolved_weights, cfg.resolved_cache_dir
    return ((weights == "tiny" and not is_built(cfg.model, cache))
            or (weights == "packaged" and not is_converted(cfg.model, cache)))
