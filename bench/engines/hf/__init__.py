"""The transformers engine (in process): every scheme transformers and its quantization
libraries apply (bnb, torchao, HQQ, GPTQ/AWQ through gptqmodel), on CPU or CUDA.

This package's __init__ is what the plan and the parent import: capabilities as data, and
whether a cell has an untimed asset to build. The engine itself is bench.engines.hf.engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.core.errors import BenchInputError
from bench.engines.base import TORCH_PRELOAD, Capabilities, EngineSettings
from bench.engines.hf.schemes import QUANT_RULES  # noqa: F401  (the registry reads it)

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

CAPABILITIES = Capabilities(
    name="hf",
    speed_at_depth=True,
    quant_methods=("none", "bnb", "gptq", "awq", "torchao", "hqq"),
    default_for=("none", "bnb", "gptq", "awq", "torchao", "hqq"),
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
    tasks=("text-generation", "image-text-to-text"),
    context_at_start=True,
    preload=TORCH_PRELOAD,
)
# what the vision-language path runs (GPTQ/AWQ calibration and HQQ are built for causal LMs)
VLM_METHODS = ("none", "bnb", "torchao")


OFFLOAD_METHODS = ("none", "bnb")  # what accelerate's device_map can place in host RAM


@dataclass
class HfSettings(EngineSettings):
    """transformers has no engine settings of its own: cell.threads, cell.compile and
    offload say how it runs."""

    name: str = "hf"

    def validate(self, cfg: "BenchConfig") -> None:
        if cfg.offload and cfg.quant.method not in OFFLOAD_METHODS:
            raise BenchInputError(f"offload=true is supported for quant.method none and bnb "
                                  f"(accelerate's device_map); quant={cfg.quant.name} "
                                  f"uses {cfg.quant.method}")

    def gpu_runtime(self) -> Optional[str]:
        return "torch"


SETTINGS = HfSettings


def needs_preparing(cfg: "BenchConfig") -> bool:
    """What is made untimed, in a process of its own, under the prepare deadline: the tiny
    model (built and trained), a packaged GGUF converted to a checkpoint, a hub checkpoint's
    download (cached by the hub library: a quick check once it is there), a GPTQ/AWQ
    calibration (cached by bench) or the published pre-quantized checkpoint's download."""
    from pathlib import Path

    weights, cache = cfg.resolved_weights, cfg.resolved_cache_dir
    if weights == "tiny" and cfg.model.config_dir is not None:
        from bench.weights.pipelines import random_is_built

        return not random_is_built(cfg)
    if cfg.quant.method in ("gptq", "awq"):
        return True
    if weights == "real":
        return not Path(str(cfg.model.hf_id)).is_dir()
    if weights == "tiny":
        from bench.weights.tiny_cache import is_built

        return not is_built(cfg.model, cache)
    if weights == "packaged":
        from bench.weights.packaged import is_converted

        return not is_converted(cfg.model, cache)
    return False


def check_runs(cfg: "BenchConfig") -> None:
    """What the vision-language path cannot run, refused before anything loads."""
    if cfg.model.task == "image-text-to-text" and cfg.quant.method not in VLM_METHODS:
        raise BenchInputError(f"quant={cfg.quant.name} is not run on vision-language models "
                              f"(model={cfg.model.name}); engine=hf runs them with quant."
                              f"method {', '.join(VLM_METHODS)}")
    if cfg.model.task == "image-text-to-text" and cfg.resolved_weights == "packaged":
        raise BenchInputError("weights=packaged is for the packaged LLM; vision-language "
                              "models take real, synthetic or tiny")
