"""A lower bound of a cell's peak memory, from its architecture facts alone (nothing loaded,
no inference library imported).

`skip_predicted_oom=true` skips a cell only when even this lower bound exceeds the capacity
it would run under, so a skip is a certain OOM, never a guess: the bound counts the weights
at the scheme's nominal bits (embeddings and the output head at the dtype where the scheme
keeps them unquantized; quantization scales, activations, the CUDA context and allocator
slack all come on top) and the KV cache the workload must hold. Anything that might fit is
measured. The skipped row carries the bound and its basis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.core.config import BenchConfig
from bench.core.sizes import DTYPE_BYTES, embedding_params, kv_cache_bytes
from bench.engines import capabilities

_GIB = 2**30
# Schemes that quantize the embeddings and the output head too (GGUF types quantize
# token_embd and output); every other method keeps them at the dtype.
_QUANTIZES_EMBEDDINGS = ("gguf",)


@dataclass(frozen=True)
class Prediction:
    """Lower bounds in bytes, and what they assumed."""

    weights_bytes: int
    kv_cache_bytes: int
    quantized_params: int  # parameters counted at the scheme's nominal bits
    other_params: int  # embeddings and output head (every parameter when unquantized): dtype

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


def _weights_lower_bound(cfg: BenchConfig) -> tuple[int, int, int]:
    """(bytes, quantized params, other params) of the architecture under the scheme."""
    params = cfg.model.arch.params
    quant = cfg.quant
    if quant.method == "none":
        return params * DTYPE_BYTES[quant.dtype], 0, params
    kept = 0 if quant.method in _QUANTIZES_EMBEDDINGS else embedding_params(cfg.model.arch)
    quantized = params - kept
    return quantized * quant.bits // 8 + kept * DTYPE_BYTES[quant.dtype], quantized, kept


def kv_cache_dtype(cfg: BenchConfig) -> str:
    """The KV cache's dtype: the engine's own, else the scheme's activation dtype."""
    return capabilities(cfg.resolved_engine).kv_cache_dtype or cfg.quant.dtype


def predict_peak(cfg: BenchConfig) -> Prediction:
    weights, quantized, other = _weights_lower_bound(cfg)
    w = cfg.workload
    kv = kv_cache_bytes(cfg.model.arch, kv_cache_dtype(cfg), w.batch_size,
                        w.prompt_tokens + w.new_tokens)
    return Prediction(weights_bytes=weights, kv_cache_bytes=kv, quantized_params=quantized,
                      other_params=other)


def oom_reason(cfg: BenchConfig, prediction: Prediction, capacity: int,
               capacity_basis: str) -> Optional[str]:
    """The skip reason when the lower bound exceeds `capacity`, else None."""
    if prediction.peak_bytes <= capacity:
        return None
    return (f"predicted OOM: peak >= {prediction.peak_bytes / _GIB:.1f} GiB > "
            f"{capacity / _GIB:.1f} GiB {capacity_basis}; basis: {prediction.basis(cfg)}")
