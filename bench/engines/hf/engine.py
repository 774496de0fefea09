"""The transformers engine: loading (real, tiny, synthetic; every scheme), the token clock,
the weights footprint, CUDA allocator peaks and class emulation, and lm-eval's HFLM."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from bench.config import BenchConfig
from bench.engines.base import (
    Device,
    DeviceInfo,
    Engine,
    GenerationTiming,
    LoadedModel,
    OffloadBudget,
    allocator_cap,
)
from bench.engines.hf import CAPABILITIES
from bench.engines.hf.clock import generate_once
from bench.engines.hf.footprint import weights_bytes
from bench.engines.hf.loading import HfModel, load_pretrained, load_synthetic
from bench.engines.hf.quant import check_runnable, quantized_params
from bench.errors import SkipCell
from bench.sources import checkpoint_path, download

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

    def weights_bytes(self) -> int:
        return weights_bytes(self.model)

    def quantized_share(self) -> Optional[float]:
        if self._method not in _LOAD_TIME_METHODS:
            return None
        return quantized_params(self.model) / self._params

    def generate(self, prompt: np.ndarray, new_tokens: int) -> GenerationTiming:
        return generate_once(self.model, torch.from_numpy(prompt).to(self.device), new_tokens,
                             self._cuda_clock)

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


class HfEngine(Engine):
    capabilities = CAPABILITIES

    def setup(self, cfg: BenchConfig) -> None:
        """Library chatter (torchao's optional kernels, deprecations) is not a measurement."""
        for name in ("torchao", "torch.utils._pytree", "bitsandbytes", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if cfg.cell.threads:
            torch.set_num_threads(cfg.cell.threads)

    def resolve_device(self, requested: str) -> Device:
        if requested == "cuda" and not torch.cuda.is_available():
            raise SkipCell("needs CUDA: cell.device=cuda but no CUDA device is visible")
        if requested == "cpu" or not torch.cuda.is_available():
            return Device("cpu")
        return Device("cuda", torch.cuda.current_device())

    def start_device(self, cfg: BenchConfig, device: Device) -> DeviceInfo:
        """The CUDA context first (the cell measures it before any tensor)."""
        where = torch.device("cuda", device.index)
        torch.cuda.init()
        torch.empty(1, device=where)  # creates the context
        props = torch.cuda.get_device_properties(where)
        total = int(props.total_memory)
        return DeviceInfo(props.name, total, total, f"total of {props.name} (gpu="
                          f"{cfg.gpu.name})", emulated=False)

    def emulate_class(self, cfg: BenchConfig, device: Device, class_bytes: int,
                      context_bytes: Optional[int]) -> Optional[dict[str, Any]]:
        """Cap the caching allocator at the class minus the measured CUDA context, so that
        allocator and context together fit the class as they would on such a card."""
        where = torch.device("cuda", device.index)
        cap = allocator_cap(class_bytes, context_bytes)
        total = torch.cuda.get_device_properties(where).total_memory
        torch.cuda.set_per_process_memory_fraction(cap / total, where)
        return {"allocator_cap_bytes": cap}

    def prepare(self, cfg: BenchConfig) -> dict[str, Any]:
        """Build, convert, download or calibrate once (cached), untimed: a calibration made
        now is the row's quantize_s."""
        if cfg.quant.method in ("gptq", "awq"):
            from bench.engines.hf.gptq import ensure_quantized

            device = self.resolve_device(cfg.cell.device)
            where = torch.device(device.type, device.index) if device.type == "cuda" else (
                torch.device("cpu"))
            quantize_s = ensure_quantized(cfg, where)
            return {"quantize_s": quantize_s} if quantize_s is not None else {}
        if cfg.resolved_weights in ("tiny", "packaged"):
            checkpoint_path(cfg)  # built (tiny) or converted (packaged) once, cached
        elif cfg.resolved_weights == "real":
            download(str(cfg.model.hf_id), cfg.model.revision)
        return {}

    def load(self, cfg: BenchConfig, device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        where = torch.device(device.type, device.index) if device.type == "cuda" else (
            torch.device("cpu"))
        loaded = load_model(cfg, where, for_eval, budget)
        if cfg.cell.compile:
            loaded.model.forward = torch.compile(loaded.model.forward, dynamic=True)
        return HfLoaded(loaded, where, cfg)

    def synchronize(self, device: Device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device.index)

    def reset_allocator_peaks(self, device: Device) -> None:
        torch.cuda.synchronize(device.index)
        torch.cuda.reset_peak_memory_stats(device.index)

    def allocator_peaks(self, device: Device) -> dict[str, Optional[int]]:
        torch.cuda.synchronize(device.index)
        return {"peak_alloc_bytes": torch.cuda.max_memory_allocated(device.index),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(device.index)}

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, torch.OutOfMemoryError) or super().is_oom(exc):
            return True
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text

    def versions(self) -> dict[str, Optional[str]]:
        return {**super().versions(), "torch": torch.__version__, "cuda": torch.version.cuda}


def weights_origin(cfg: BenchConfig, loaded: HfModel) -> str:
    """Where the weights transformers runs came from, for the row."""
    weights = cfg.resolved_weights
    if weights == "synthetic":
        return f"synthetic (random) weights of {cfg.model.name}'s architecture, seed {cfg.seed}"
    if weights == "packaged":
        from bench.sources.packaged import describe

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
