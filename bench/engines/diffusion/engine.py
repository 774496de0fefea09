"""The diffusion engine: a diffusers pipeline loaded the one way a hub checkpoint is (the
tiny and synthetic pipelines are written as such directories first, untimed), its denoiser
quantized by the scheme through diffusers' own quantization configs, the memory-saving modes
applied, and every call timed phase by phase: the encoders (forward hooks), each denoising
step (the denoiser's first call of a step to the pipeline's step-end callback) and the
VAE's decode, with the device synchronized at each boundary."""

from __future__ import annotations

import gc
import inspect
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from bench.core.config import BenchConfig, QuantConfig
from bench.core.errors import SkipCell
from bench.engines.base import (
    Device,
    GenerationTiming,
    ImageRequest,
    ImageRun,
    LoadedModel,
    OffloadBudget,
)
from bench.engines.diffusion import CAPABILITIES, DiffusionSettings
from bench.engines.hf.footprint import weights_bytes
from bench.engines.hf.quant import check_runnable, quantized_params, torch_dtype
from bench.engines.torch_engine import TorchEngine, torch_device

ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "image_encoder")
DENOISERS = ("unet", "transformer")


def denoiser_name(pipe: Any) -> str:
    for name in DENOISERS:
        if getattr(pipe, name, None) is not None:
            return name
    raise ValueError(f"{type(pipe).__name__} has no denoiser ({', '.join(DENOISERS)})")


def modules_of(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's torch components by name (schedulers and tokenizers are not)."""
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def quantization_config(quant: QuantConfig, denoiser: str) -> Optional[Any]:
    """diffusers' PipelineQuantizationConfig for the scheme, on the denoiser alone (the
    encoders and the VAE stay at the scheme's dtype, as diffusers' guides quantize), with
    diffusers' own config classes (its torchao config does not take transformers')."""
    if quant.method == "none":
        return None
    import diffusers
    from diffusers.quantizers import PipelineQuantizationConfig

    config: Any
    if quant.method == "bnb" and quant.bits == 8:
        config = diffusers.BitsAndBytesConfig(load_in_8bit=True)
    elif quant.method == "bnb":
        config = diffusers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=torch_dtype(quant))
    elif quant.method == "torchao":
        from bench.engines.hf.quant import torchao_config

        config = diffusers.TorchAoConfig(quant_type=torchao_config(quant))
    else:
        raise ValueError(f"engine=diffusion does not run quant.method={quant.method}")
    return PipelineQuantizationConfig(quant_mapping={denoiser: config})


def pipeline_dir(cfg: BenchConfig, offline: bool) -> str:
    """The local directory of the cell's pipeline: the hub snapshot (downloaded in the
    prepare step; `offline`: only from the cache), or the random pipeline written there."""
    if cfg.resolved_weights == "real":
        if Path(str(cfg.model.hf_id)).is_dir():
            return str(cfg.model.hf_id)
        import os

        from diffusers import DiffusionPipeline

        return str(DiffusionPipeline.download(
            str(cfg.model.hf_id), revision=cfg.model.revision, use_safetensors=True,
            token=os.environ.get("HF_TOKEN") or None, local_files_only=offline))
    if cfg.model.config_dir is None:
        raise SkipCell(f"weights={cfg.resolved_weights} builds a pipeline from the config "
                       f"files bench ships, and model={cfg.model.name} has none (no public "
                       f"config of every component): measured with weights=real only")
    from bench.weights.pipelines import ensure_random_pipeline

    return str(ensure_random_pipeline(cfg))


class ComponentPeaks:
    """Each component's CUDA allocator peak during its own calls (its weights, activations
    and workspace; what a guide's "the VAE decode needs N GB at 1024²" means), without
    losing the cell's whole-pipeline peak: the counter is reset as a component starts, and
    what it held before each reset is carried, so `overall` is the peak since the cell began
    as if nothing had been reset."""

    def __init__(self, read: Callable[[], tuple[int, int]], reset: Callable[[], None]) -> None:
        self._read, self._reset = read, reset
        self._carried = (0, 0)  # allocated, reserved peaks before the last reset
        self.by_component: dict[str, int] = {}
        self._open: list[str] = []

    def _fold(self) -> None:
        allocated, reserved = self._read()
        self._carried = (max(self._carried[0], allocated), max(self._carried[1], reserved))

    def start(self, name: str) -> None:
        if not self._open:  # a component called inside another is counted in the outer one
            self._fold()
            self._reset()
        self._open.append(name)

    def end(self, name: str) -> None:
        if self._open and self._open[-1] == name:
            self._open.pop()
        if not self._open:
            allocated, _ = self._read()
            self.by_component[name] = max(self.by_component.get(name, 0), allocated)
            self._fold()

    def overall(self) -> tuple[int, int]:
        self._fold()
        return self._carried

    def restart(self) -> None:
        """The cell's counters start afresh (its allocator peaks were reset)."""
        self._carried = (0, 0)
        self.by_component = {}


class PhaseClock:
    """Timestamps of one pipeline call's phases, taken by hooks on its components."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self.encoder_s = 0.0
        self.decode_s = 0.0
        self.steps: list[float] = []
        self.latents: list[torch.Tensor] = []
        self._step_start: Optional[float] = None
        self._open: Optional[float] = None

    def now(self) -> float:
        self._sync()
        return time.perf_counter()

    def encoder_start(self, *_: Any) -> None:
        self._open = self.now()

    def encoder_end(self, *_: Any) -> None:
        if self._open is not None:
            self.encoder_s += self.now() - self._open
            self._open = None

    def denoiser_call(self, *_: Any) -> None:
        if self._step_start is None:
            self._step_start = self.now()

    def step_end(self, pipe: Any, step: int, timestep: Any,
                 tensors: dict[str, Any]) -> dict[str, Any]:
        if self._step_start is not None:
            self.steps.append(self.now() - self._step_start)
        self._step_start = None
        return tensors

    def timed(self, function: Callable[..., Any], into: str,
              keep_input: bool = False) -> Callable[..., Any]:
        """`function` (the VAE's encode or decode), its time added to `into`."""
        def wrapper(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if keep_input:
                self.latents.append(latents.detach().float().cpu())
            start = self.now()
            out = function(latents, *args, **kwargs)
            setattr(self, into, getattr(self, into) + self.now() - start)
            return out
        return wrapper


class DiffusionLoaded(LoadedModel):
    """A diffusers pipeline in this process, ready to render the workload."""

    def __init__(self, pipe: Any, device: torch.device, cfg: BenchConfig, source: str) -> None:
        self.pipe = pipe
        self.device = device
        self.dtype = torch_dtype(cfg.quant)
        self.hf_id = cfg.model.hf_id if cfg.resolved_weights == "real" else source
        self.revision = cfg.model.revision if cfg.resolved_weights == "real" else "local"
        self.denoiser = denoiser_name(pipe)
        self._method = cfg.quant.method
        self._params = cfg.model.arch.params
        self.offloaded = cfg.engine.offload != "none"  # type: ignore[attr-defined]
        kept = [n for n in modules_of(pipe) if n != self.denoiser]
        self.weights_origin = (f"{source} ({type(pipe).__name__})")
        if self._method != "none":
            self.note = (f"{cfg.quant.name} on the {self.denoiser}; {', '.join(kept)} at "
                         f"{cfg.quant.dtype}")
        self._signature = inspect.signature(type(pipe).__call__).parameters
        self.peaks: Optional[ComponentPeaks] = None
        if device.type == "cuda":
            self.peaks = ComponentPeaks(
                lambda: (int(torch.cuda.max_memory_allocated(device)),
                         int(torch.cuda.max_memory_reserved(device))),
                lambda: torch.cuda.reset_peak_memory_stats(device))

    def weights_bytes(self) -> int:
        return sum(self.component_bytes().values())

    def component_bytes(self) -> dict[str, int]:
        return {name: weights_bytes(module) for name, module in modules_of(self.pipe).items()}

    def quantized_share(self) -> Optional[float]:
        if self._method == "none":
            return None
        return quantized_params(getattr(self.pipe, self.denoiser)) / self._params

    def facts(self) -> dict[str, Any]:
        return {"component_bytes": self.component_bytes()}

    def _default(self, key: str) -> Any:
        parameter = self._signature.get(key)
        return None if parameter is None else parameter.default

    def _scale(self) -> int:
        """Pixels per latent: the VAE's downsampling (1: a pixel-space pipeline, DeepFloyd
        IF, which has no VAE)."""
        return int(getattr(self.pipe, "vae_scale_factor", 1) or 1)

    def _size(self, request: ImageRequest) -> tuple[int, int]:
        """The workload's resolution, else the pipeline's default, else its denoiser's."""
        native = int(getattr(self.pipe, self.denoiser).config.sample_size) * self._scale()
        height = request.height or self._default("height") or native
        width = request.width or self._default("width") or native
        return int(height), int(width)

    def render(self, request: ImageRequest) -> ImageRun:
        pipe = self.pipe
        video = "num_frames" in self._signature
        height, width = self._size(request)
        steps = int(request.steps or self._default("num_inference_steps"))
        frames = (request.frames or int(getattr(pipe.unet.config, "num_frames", 14))
                  if video else None)
        guidance_key = "guidance_scale" if "guidance_scale" in self._signature else (
            "max_guidance_scale")
        guidance = request.guidance if request.guidance is not None else self._default(
            guidance_key)
        clock = PhaseClock(self._sync)
        kwargs: dict[str, Any] = {
            "height": height, "width": width, "num_inference_steps": steps,
            guidance_key: guidance, "output_type": "np", "clean_caption": False,
            "generator": torch.Generator("cpu").manual_seed(request.seed),
            "callback_on_step_end": clock.step_end,
            # pipelines of the older callback (DeepFloyd IF): after every step
            "callback": lambda step, t, _: clock.step_end(None, step, t, {}),
            "callback_steps": 1}
        if "latents" in self._signature:  # else the pipeline draws its own from the seed
            kwargs["latents"] = self._initial_latents(request, height, width, frames)
        if video:
            kwargs.update(image=request.image, num_frames=frames,
                          num_videos_per_prompt=request.batch_size,
                          decode_chunk_size=frames)
        else:
            kwargs.update(prompt=request.prompt, num_images_per_prompt=request.batch_size)
        if "callback_on_step_end" in self._signature:
            kwargs.pop("callback")
            kwargs.pop("callback_steps")
        hooks = self._hook(clock)
        vae = getattr(pipe, "vae", None)  # none in a pixel-space pipeline
        if vae is not None:
            decode, encode = vae.decode, vae.encode
            vae.decode = clock.timed(self._vae_call(decode, "vae"), "decode_s",
                                     keep_input=True)
            vae.encode = clock.timed(self._vae_call(encode, "vae"), "encoder_s")
        try:
            with torch.inference_mode():
                start = clock.now()
                out = pipe(**{k: v for k, v in kwargs.items() if k in self._signature})
                total = clock.now() - start
        finally:
            if vae is not None:
                vae.decode, vae.encode = decode, encode
            for hook in hooks:
                hook.remove()
        images = np.asarray(out.frames if video else out.images, dtype=np.float32)
        return ImageRun(total_s=total, encoder_s=clock.encoder_s, step_s=tuple(clock.steps),
                        decode_s=clock.decode_s if vae is not None else None,
                        images=images.reshape((-1, *images.shape[-3:])),
                        latents=torch.cat(clock.latents).numpy() if clock.latents else
                        np.zeros(0, np.float32),
                        height=height, width=width, steps=steps,
                        guidance=None if guidance is None else float(guidance), frames=frames)

    def _hook(self, clock: PhaseClock) -> list[Any]:
        hooks = []
        for name, module in modules_of(self.pipe).items():
            if name in ENCODERS:
                hooks.append(module.register_forward_pre_hook(clock.encoder_start))
                hooks.append(module.register_forward_hook(clock.encoder_end))
            elif name == self.denoiser:
                hooks.append(module.register_forward_pre_hook(clock.denoiser_call))
            if self.peaks is not None and name != "vae":  # the VAE: its encode and decode
                hooks.append(module.register_forward_pre_hook(
                    lambda *_, n=name, p=self.peaks: p.start(n)))
                hooks.append(module.register_forward_hook(
                    lambda *_, n=name, p=self.peaks: p.end(n)))
        return hooks

    def _vae_call(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        """The VAE's encode or decode, its allocator peak counted as the VAE's."""
        peaks = self.peaks
        if peaks is None:
            return function

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            peaks.start(name)
            try:
                return function(*args, **kwargs)
            finally:
                peaks.end(name)
        return wrapper

    def speed_facts(self) -> dict[str, Any]:
        if self.peaks is None:
            return {}
        return {"component_peak_bytes": dict(self.peaks.by_component)}

    def _initial_latents(self, request: ImageRequest, height: int, width: int,
                         frames: Optional[int]) -> torch.Tensor:
        """Noise drawn in float32 on the CPU from the seed, then cast: every dtype and device
        starts from the same latents (torch draws different values per dtype)."""
        denoiser = getattr(self.pipe, self.denoiser)
        channels = int(denoiser.config.in_channels)
        scale = self._scale()
        shape: Sequence[int] = (request.batch_size, channels, height // scale, width // scale)
        if frames is not None:  # image-to-video: half the channels are the image's latents
            shape = (request.batch_size, frames, channels // 2, height // scale,
                     width // scale)
        noise = torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(
            request.seed), dtype=torch.float32)
        return noise.to(self.device, self.dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def generate(self, prompt: np.ndarray, new_tokens: int) -> GenerationTiming:
        raise NotImplementedError("a diffusion pipeline renders images, not tokens")

    def lm(self, batch_size: int) -> Any:
        raise NotImplementedError("a diffusion pipeline has no lm-eval LM")

    def logprobs(self, token_ids: Sequence[int], last: Optional[int] = None) -> np.ndarray:
        raise NotImplementedError("a diffusion pipeline has no next-token distribution")

    def close(self) -> None:
        del self.pipe
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class DiffusionEngine(TorchEngine):
    capabilities = CAPABILITIES
    quiet_loggers = (*TorchEngine.quiet_loggers, "diffusers")

    def setup(self, cfg: BenchConfig) -> None:
        super().setup(cfg)
        from diffusers.utils import logging as d_logging

        d_logging.set_verbosity_error()
        d_logging.disable_progress_bar()

    _loaded: Optional[DiffusionLoaded] = None  # whose component peaks hold the cell's

    def reset_allocator_peaks(self, device: Device) -> None:
        super().reset_allocator_peaks(device)
        if self._loaded is not None and self._loaded.peaks is not None:
            self._loaded.peaks.restart()

    def allocator_peaks(self, device: Device) -> dict[str, Optional[int]]:
        """The peaks since the cell began, the resets of the per-component counts undone."""
        peaks = super().allocator_peaks(device)
        if self._loaded is None or self._loaded.peaks is None:
            return peaks
        allocated, reserved = self._loaded.peaks.overall()
        return {"peak_alloc_bytes": max(int(peaks["peak_alloc_bytes"] or 0), allocated),
                "peak_reserved_bytes": max(int(peaks["peak_reserved_bytes"] or 0), reserved)}

    def prepare(self, cfg: BenchConfig) -> dict[str, Any]:
        """The hub snapshot downloaded, or the random pipeline written: untimed."""
        if cfg.resolved_weights != "real" and cfg.model.config_dir is None:
            return {}  # the cell skips, saying why
        pipeline_dir(cfg, offline=False)
        return {}

    def load(self, cfg: BenchConfig, device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        from diffusers import DiffusionPipeline

        settings = cfg.engine
        assert isinstance(settings, DiffusionSettings)
        where = torch_device(device)
        check_runnable(cfg.quant, where)
        if settings.offload != "none" and where.type != "cuda":
            raise SkipCell(f"engine.offload={settings.offload} moves components between a GPU "
                           f"and host RAM; this cell runs on the CPU")
        if cfg.quant.method == "bnb" and where.type != "cuda":
            raise SkipCell(f"needs CUDA: diffusers' bitsandbytes quantizer (quant="
                           f"{cfg.quant.name}) refuses a machine without a GPU")
        source = pipeline_dir(cfg, offline=True)
        denoiser = _denoiser_in_index(Path(source))
        pipe = DiffusionPipeline.from_pretrained(
            source, torch_dtype=torch_dtype(cfg.quant),
            quantization_config=quantization_config(cfg.quant, denoiser))
        pipe.set_progress_bar_config(disable=True)
        if settings.offload == "model":
            pipe.enable_model_cpu_offload(device=where)
        elif settings.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=where)
        else:
            pipe.to(where)
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        if settings.vae_slicing:
            pipe.vae.enable_slicing()
        if settings.attention_slicing:
            pipe.enable_attention_slicing()
        loaded = DiffusionLoaded(pipe, where, cfg, source)
        if loaded.peaks is not None:  # what the allocator held while loading is carried
            loaded.peaks.overall()
        self._loaded = loaded
        return loaded


def _denoiser_in_index(folder: Path) -> str:
    import json

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    for name in DENOISERS:
        if isinstance(index.get(name), list) and index[name][0] is not None:
            return name
    raise ValueError(f"{folder}/model_index.json names no denoiser ({', '.join(DENOISERS)})")


ENGINE = DiffusionEngine()
