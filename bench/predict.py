"""A lower bound of a cell's peak memory, from its architecture alone (nothing loaded).

`skip_predicted_oom=true` skips a cell only when even this lower bound exceeds the capacity
it would run under, so a skip is a certain OOM, never a guess: the bound counts the weights
at the scheme's nominal bits (quantization scales, activations, the CUDA context and
allocator slack all come on top) and the KV cache the workload must hold. Anything that
might fit is measured. The skipped row carries the bound and its basis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from bench.config import BenchConfig
from bench.loading import hf_config, meta_model
from bench.quant import KEEP_UNQUANTIZED

_GIB = 2**30
_ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Prediction:
    """Lower bounds in bytes, and what they assumed."""

    weights_bytes: int
    kv_cache_bytes: int
    quantized_params: int  # parameters counted at the scheme's nominal bits
    other_params: int  # embeddings, output head, norms, biases: at the dtype

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes

    def basis(self, cfg: BenchConfig) -> str:
        """One line: how the bound was reached."""
        w = cfg.workload
        quant = cfg.quant
        held = (f"{self.quantized_params / 1e9:.2f}B params at {quant.bits} bits + "
                f"{self.other_params / 1e9:.2f}B at {quant.dtype}"
                if quant.method != "none" else
                f"{self.other_params / 1e9:.2f}B params at {quant.dtype}")
        return (f"weights >= {self.weights_bytes / _GIB:.1f} GiB ({held}) + KV cache "
                f"{self.kv_cache_bytes / _GIB:.2f} GiB (batch {w.batch_size} x "
                f"{w.prompt_tokens + w.new_tokens} tokens)")


def _always_full_precision(name: str, param: torch.nn.Parameter) -> bool:
    """Parameters no weight quantizer shrinks: 1-D (norms, biases), embeddings (embed_tokens,
    GPT-NeoX's embed_out, MPT's wte / wpe) and the output head."""
    module = name.rpartition(".")[0].rpartition(".")[2]
    return (param.dim() < 2 or any(key in name for key in ("embed", "wte", "wpe"))
            or module in KEEP_UNQUANTIZED)


def _weights_lower_bound(cfg: BenchConfig) -> tuple[int, int, int]:
    """(bytes, quantized params, other params) of the architecture under the scheme."""
    model = meta_model(cfg.model.arch)
    element = _ELEMENT_BYTES[cfg.quant.dtype]
    quantized = other = 0
    for name, param in model.named_parameters():  # tied weights are listed once
        if cfg.quant.method == "none" or _always_full_precision(name, param):
            other += param.numel()
        else:
            quantized += param.numel()
    return quantized * cfg.quant.bits // 8 + other * element, quantized, other


def _kv_cache_lower_bound(cfg: BenchConfig) -> int:
    """Keys and values of every layer for the workload's context, at the activation dtype."""
    arch = cfg.model.arch
    text = hf_config(arch).get_text_config()
    head_dim = getattr(text, "head_dim", None) or arch.hidden_size // arch.num_attention_heads
    tokens = cfg.workload.prompt_tokens + cfg.workload.new_tokens
    window = getattr(text, "sliding_window", None)
    if isinstance(window, int) and window > 0:  # some layers may keep only the window
        tokens = min(tokens, window)
    element = _ELEMENT_BYTES[cfg.quant.dtype]  # the activation (and cache) dtype
    return (2 * arch.num_hidden_layers * cfg.workload.batch_size * arch.num_key_value_heads
            * head_dim * tokens * element)


def predict_peak(cfg: BenchConfig) -> Prediction:
    weights, quantized, other = _weights_lower_bound(cfg)
    return Prediction(weights_bytes=weights, kv_cache_bytes=_kv_cache_lower_bound(cfg),
                      quantized_params=quantized, other_params=other)


def oom_reason(cfg: BenchConfig, prediction: Prediction, capacity: int,
               capacity_basis: str) -> Optional[str]:
    """The skip reason when the lower bound exceeds `capacity`, else None."""
    if prediction.peak_bytes <= capacity:
        return None
    return (f"predicted OOM: peak >= {prediction.peak_bytes / _GIB:.1f} GiB > "
            f"{capacity / _GIB:.1f} GiB {capacity_basis}; basis: {prediction.basis(cfg)}")
