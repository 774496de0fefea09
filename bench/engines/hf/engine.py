"""The transformers engine: loading (real, tiny, synthetic; every scheme), the token clock,
the weights footprint, CUDA allocator peaks and class emulation, and lm-eval's HFLM."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from bench.core.config import BenchConfig
from bench.engines.base import (
    Device,
    GenerationTiming,
    LoadedModel,
    OffloadBudget,
)
from bench.engines.hf import CAPABILITIES
from bench.engines.hf.clock import generate_once
from bench.engines.hf.footprint import weights_bytes
from bench.engines.hf.loading import HfModel, load_pretrained, load_synthetic
from bench.engines.hf.quant import check_runnable, quantized_params, torch_dtype
from bench.engines.torch_engine import TorchEngine, torch_device
from bench.weights import checkpoint_path, download

if TYPE_CHECKING:
    from bench.engines.hf.vision import VisionPrompt

# Schemes whose layers the library converts at load time (and may leave alone).
_LOAD_TIME_METHODS = ("bnb", "torchao", "hqq")


class HfLoaded(LoadedModel):
    """A transformers model (and its tokenizer when evaluated) in this process."""

    def __init__(self, loaded: HfModel, device: torch.device, cfg: BenchConfig) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = device
        self.hf_id, self.revision = loaded.hf_id, loaded.revision
        self.quantize_s, self.note = loaded.quantize_s, loaded.note
        self.offloaded = cfg.offload
        self.weights_origin = weights_origin(cfg, loaded)
        self._params = cfg.model.arch.params
        self._method = cfg.quant.method
        self._cuda_clock = cfg.workload.cuda_clock
        self._cfg = cfg

    def facts(self) -> dict[str, Any]:
        from bench.engines.hf.kv_cache import kv_cache_facts

        return kv_cache_facts(self.model, self.device, self._cfg)

    def weights_bytes(self) -> int:
        return weights_bytes(self.model)

    def quantized_share(self) -> Optional[float]:
        if self._method not in _LOAD_TIME_METHODS:
            return None
        return quantized_params(self.model) / self._params

    def generate(self, prompt: np.ndarray, new_tokens: int) -> GenerationTiming:
        return generate_once(self.model, torch.from_numpy(prompt).to(self.device), new_tokens,
                             self._cuda_clock)

    def generate_at_depth(self, prefix: np.ndarray, prompt: np.ndarray,
                          new_tokens: int) -> GenerationTiming:
        ids = torch.from_numpy(np.concatenate([prefix, prompt], axis=1)).to(self.device)
        with torch.no_grad():  # untimed: the cache generate continues from
            cache = self.model(input_ids=ids[:, :prefix.shape[1]], use_cache=True
                               ).past_key_values if prefix.shape[1] else None
        return generate_once(self.model, ids, new_tokens, self._cuda_clock,
                             extra={"past_key_values": cache} if cache is not None else None)

    def lm(self, batch_size: int) -> Any:
        from bench.engines.hf.lm import PrefixCacheHFLM

        return PrefixCacheHFLM(pretrained=self.model, tokenizer=self.tokenizer,
                               batch_size=batch_size)

    def logprobs(self, token_ids: Sequence[int], last: Optional[int] = None) -> np.ndarray:
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        with torch.no_grad():  # logits_to_keep: the head computes only the rows asked for
            logits = self.model(input_ids=ids, logits_to_keep=last or 0).logits[0]
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def close(self) -> None:
        del self.model
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class HfVisionLoaded(HfLoaded):
    """A vision-language model with its request's image inputs made once (the processor's
    time measured then); every generate call sends the image with the prompt, and the vision
    tower's share of each call is timed by a hook."""

    def __init__(self, loaded: HfModel, device: torch.device, cfg: BenchConfig,
                 prompt: "VisionPrompt", real_prompt: bool) -> None:
        from bench.engines.hf.vision import full_precision_modules, vision_tower

        super().__init__(loaded, device, cfg)
        self.prompt = prompt
        self._real_prompt = real_prompt  # the processor's ids, not the workload's random ones
        self._vision_s: list[float] = []
        tower = vision_tower(self.model)
        if tower is not None:
            tower.register_forward_pre_hook(self._vision_start)
            tower.register_forward_hook(self._vision_end)
        self._opened: Optional[float] = None
        if self._method != "none":
            kept = full_precision_modules(self.model)
            self.note = "; ".join(filter(None, [self.note, f"left in {cfg.quant.dtype}: "
                                                f"{', '.join(kept) or 'nothing'}"]))

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _vision_start(self, *_: Any) -> None:
        self._opened = self._now()

    def _vision_end(self, *_: Any) -> None:
        if self._opened is not None:
            self._vision_s.append(self._now() - self._opened)
            self._opened = None

    def facts(self) -> dict[str, Any]:
        return {}  # a forward pass needs the request's image: its cache is not probed

    def generate(self, prompt: np.ndarray, new_tokens: int) -> GenerationTiming:
        return generate_once(self.model, self.prompt.input_ids, new_tokens, self._cuda_clock,
                             extra=self.prompt.extra(), ids_key=self.prompt.ids_key)

    def logprobs(self, token_ids: Sequence[int], last: Optional[int] = None) -> np.ndarray:
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        inputs = self.prompt.with_ids(ids)
        with torch.no_grad():
            logits = self.model(**{k: (v[:1] if k != "input_ids" else v)
                                   for k, v in inputs.items()}).logits[0]
        if last:
            logits = logits[-last:]
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def caption(self, new_tokens: int) -> np.ndarray:
        ids = self.prompt.input_ids[:1]
        inputs = {k: v[:1] for k, v in self.prompt.with_ids(ids).items()}
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False,
                                      num_beams=1, pad_token_id=0)
        return out[0].cpu().numpy()

    def speed_facts(self) -> dict[str, Any]:
        timed = self._vision_s[-3:] or [None]
        return {"image_preprocess_ms": 1000 * self.prompt.preprocess_s,
                "vision_encode_ms": (1000 * float(np.median(timed))
                                     if timed[0] is not None else None),
                "image_tokens": self.prompt.image_tokens or None,
                "prompt_tokens": int(self.prompt.input_ids.shape[1])}

    def lm(self, batch_size: int) -> Any:
        raise NotImplementedError("accuracy tasks of vision-language models are not built yet")


class HfEngine(TorchEngine):
    capabilities = CAPABILITIES

    def prepare(self, cfg: BenchConfig) -> dict[str, Any]:
        """Build, convert, download or calibrate once (cached), untimed: a calibration made
        now is the row's quantize_s."""
        if cfg.quant.method in ("gptq", "awq"):
            from bench.engines.hf.gptq import ensure_quantized

            where = torch_device(self.resolve_device(cfg.cell.device))
            quantize_s = ensure_quantized(cfg, where)
            return {"quantize_s": quantize_s} if quantize_s is not None else {}
        if cfg.resolved_weights in ("tiny", "packaged"):
            checkpoint_path(cfg)  # built (tiny) or converted (packaged) once, cached
        elif cfg.resolved_weights == "real":
            download(str(cfg.model.hf_id), cfg.model.revision)
        return {}

    def load(self, cfg: BenchConfig, device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        where = torch_device(device)
        if cfg.model.task == "image-text-to-text":
            return load_vision(cfg, where)
        loaded = load_model(cfg, where, for_eval, budget)
        if cfg.cell.compile:
            loaded.model.forward = torch.compile(loaded.model.forward, dynamic=True)
        return HfLoaded(loaded, where, cfg)


def weights_origin(cfg: BenchConfig, loaded: HfModel) -> str:
    """Where the weights transformers runs came from, for the row."""
    weights = cfg.resolved_weights
    if weights == "synthetic":
        return f"synthetic (random) weights of {cfg.model.name}'s architecture, seed {cfg.seed}"
    if weights == "packaged":
        from bench.weights.packaged import describe

        return f"{describe(cfg.model)}, dequantized to float32 by transformers"
    if weights == "tiny":
        return f"tiny checkpoint {loaded.revision} built by bench"
    return f"{loaded.hf_id}@{loaded.revision}"


def load_model(cfg: BenchConfig, device: torch.device, with_tokenizer: bool,
               budget: Optional[OffloadBudget] = None) -> HfModel:
    """The cell's model by weight source and scheme; SkipCell where the scheme cannot run
    here (CUDA-only scheme, missing optional extra)."""
    check_runnable(cfg.quant, device)
    if cfg.quant.method in ("gptq", "awq"):
        from bench.engines.hf.gptq import load_gptq  # imports gptqmodel: gptq/awq cells only

        return load_gptq(cfg, device, with_tokenizer)
    weights = cfg.resolved_weights
    if weights == "synthetic":
        loaded = load_synthetic(cfg.model.arch, cfg.quant, device, cfg.seed, budget)
        loaded.hf_id = cfg.model.hf_id
        return loaded
    if weights in ("tiny", "packaged"):
        path = Path(checkpoint_path(cfg))
        loaded = load_pretrained(str(path), None, cfg.quant, device, with_tokenizer, budget)
        loaded.revision = path.name
        if weights == "packaged":
            loaded.hf_id = cfg.model.hf_id  # the hub original the package carries
        return loaded
    assert cfg.model.hf_id is not None  # validated: weights=real needs hf_id
    return load_pretrained(cfg.model.hf_id, cfg.model.revision, cfg.quant, device,
                           with_tokenizer, budget)


ENGINE = HfEngine()


def load_vision(cfg: BenchConfig, device: torch.device) -> HfVisionLoaded:
    """A vision-language model by weight source and scheme, and its request's inputs: the
    real checkpoint through from_pretrained and its processor; the tiny one through
    from_pretrained of the directory bench wrote; synthetic built on the meta device and
    materialised (quantized) layer by layer, as for language models."""
    from transformers import AutoModelForImageTextToText

    from bench.data.images import DEFAULT_IMAGE, DEFAULT_VLM_PROMPT, load_image
    from bench.data.prompts import random_prompt
    from bench.engines.hf.vision import built_prompt, processor_prompt
    from bench.weights.vlm import vlm_config

    check_runnable(cfg.quant, device)
    weights, w = cfg.resolved_weights, cfg.workload
    image = load_image(w.image or DEFAULT_IMAGE)
    dtype = torch_dtype(cfg.quant)
    if weights == "synthetic":
        from bench.engines.hf.loading import build_synthetic

        loaded = build_synthetic(vlm_config(cfg), AutoModelForImageTextToText, cfg.quant,
                                 device, cfg.seed)
        loaded.hf_id = cfg.model.hf_id
    else:
        path = checkpoint_path(cfg)
        loaded = load_pretrained(path, None if weights == "tiny" else cfg.model.revision,
                                 cfg.quant, device, False,
                                 auto_class=AutoModelForImageTextToText)
        if weights == "tiny":
            loaded.revision = Path(path).name
    if weights == "real":
        assert cfg.model.hf_id is not None
        prompt = processor_prompt(cfg.model.hf_id, cfg.model.revision, image,
                                  w.prompt or DEFAULT_VLM_PROMPT, w.batch_size, device, dtype)
    else:
        assert cfg.model.arch.vocab_size is not None
        text = random_prompt(w.batch_size, w.prompt_tokens, cfg.model.arch.vocab_size, cfg.seed)
        prompt = built_prompt(loaded.model.config, image, text, device, dtype)
    return HfVisionLoaded(loaded, device, cfg, prompt, real_prompt=weights == "real")
