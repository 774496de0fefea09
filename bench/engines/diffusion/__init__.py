"""The diffusion engine (diffusers pipelines, in process): text-to-image (Stable Diffusion
1.5 / 2.1 / XL, DeepFloyd IF) and image-to-video (Stable Video Diffusion), on CPU or CUDA,
with the denoiser quantized by the scheme and the memory-saving modes the published guides
advise as settings. This __init__ is what the plan and the parent import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.core.config import choose
from bench.core.errors import BenchInputError
from bench.engines.base import TORCH_PRELOAD, Capabilities, EngineSettings

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

CAPABILITIES = Capabilities(
    name="diffusion",
    quant_methods=("none", "bnb", "torchao"),  # on the denoiser (UNet); the rest at dtype
    default_for=("none", "bnb", "torchao"),
    devices=("cpu", "cuda"),
    weights=("real", "synthetic", "tiny"),
    token_clock=False,
    allocator_peaks=True,
    offload=False,  # its own modes: engine.offload (model / sequential CPU offload)
    compile=False,
    max_batch_size=None,  # images per prompt
    synthetic_model_types=None,
    kv_cache_dtype=None,
    distribution="diffusers",
    tasks=("text-to-image", "image-to-video"),
    full_logprobs=False,  # quality is image-based (PSNR, SSIM, latent MSE)
    context_at_start=True,
    preload=TORCH_PRELOAD,
)
OFFLOAD_MODES = ("none", "model", "sequential")


@dataclass
class DiffusionSettings(EngineSettings):
    """The memory-saving modes diffusers offers, each its own cell (a cell that needed one
    to fit is ⚠️ "fits with offload")."""

    name: str = "diffusion"
    offload: str = "none"  # model: enable_model_cpu_offload; sequential: ..._sequential_...
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_slicing: bool = False

    def validate(self, cfg: "BenchConfig") -> None:
        choose("engine.offload", self.offload, OFFLOAD_MODES)
        if self.offload != "none" and cfg.cell.device == "cpu":
            raise BenchInputError(f"engine.offload={self.offload} moves components between a "
                                  f"GPU and host RAM; cell.device=cpu has no GPU")

    def gpu_runtime(self) -> Optional[str]:
        return "torch"

    def offloads(self) -> bool:
        return self.offload != "none"

    def describe(self) -> str:
        modes = [f"offload={self.offload}"] if self.offload != "none" else []
        modes += [m for m in ("vae_tiling", "vae_slicing", "attention_slicing")
                  if getattr(self, m)]
        return " ".join(modes)


SETTINGS = DiffusionSettings


def needs_preparing(cfg: "BenchConfig") -> bool:
    """Random pipelines (tiny, synthetic) are written once, untimed; a hub pipeline is
    downloaded."""
    from pathlib import Path

    if cfg.resolved_weights == "real":
        return not Path(str(cfg.model.hf_id)).is_dir()
    from bench.weights.pipelines import random_is_built

    return cfg.model.config_dir is not None and not random_is_built(cfg)


def check_runs(cfg: "BenchConfig") -> None:
    """What diffusers cannot do here, refused before anything loads."""
    if cfg.quant.method == "bnb" and cfg.cell.device == "cpu":
        raise BenchInputError(f"quant={cfg.quant.name} on engine=diffusion needs a GPU: "
                              f"diffusers' bitsandbytes quantizer refuses a machine without "
                              f"one (cell.device=cpu)")
