"""A lower bound of a cell's peak memory, from its architecture facts alone (nothing loaded,
no inference library imported).

`skip_predicted_oom=true` skips a cell only when even this lower bound exceeds the capacity
it would run under, and the report marks a planned cell "❌ certain" on the same evidence, so
the bound must only ever err low. It counts the weights at the scheme's nominal bits
(embeddings and the output head at the dtype where the scheme keeps them unquantized; a
tied pair once) and the KV cache the workload must hold: transformers' `generate` caches
prompt + new − 1 tokens (the last token is never fed back), every other engine at least as
many. It leaves out what an engine holds in host memory (llama.cpp's token-embedding table,
whatever `-ngl` says). Quantization scales, activations, the CUDA context and allocator
slack all come on top. It assumes no offload: a cell whose settings may keep layers in host
RAM gets no bound (`keeps_layers_on_host`), and no swap or driver fallback to system memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.core.config import ArchFacts, BenchConfig, QuantConfig
from bench.core.sizes import DTYPE_BYTES, embedding_params, kv_cache_bytes
from bench.engines import capabilities

_GIB = 2**30
PREDICTED_OOM = "predicted OOM"  # how a skip's error starts (resume measures it again)
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
    kv_tokens: int = 0  # per sequence: what the cache must hold
    batch: int = 1
    host_params: int = 0  # held in host memory by the engine, left out (llama.cpp token_embd)

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes

    def basis_of(self, quant: QuantConfig) -> str:
        """One line: how the bound was reached."""
        held = (f"{self.quantized_params / 1e9:.2f}B params at {quant.bits} bits + "
                f"{self.other_params / 1e9:.2f}B at {quant.dtype}"
                if quant.method != "none" else
                f"{self.other_params / 1e9:.2f}B params at {quant.dtype}")
        if self.host_params:
            held += f"; token embeddings ({self.host_params / 1e9:.2f}B) on the host"
        if not self.kv_tokens:
            return f"weights only >= {self.weights_bytes / _GIB:.1f} GiB ({held})"
        return (f"weights >= {self.weights_bytes / _GIB:.1f} GiB ({held}) + KV cache "
                f"{self.kv_cache_bytes / _GIB:.2f} GiB (batch {self.batch} x "
                f"{self.kv_tokens} tokens)")

    def basis(self, cfg: BenchConfig) -> str:
        return self.basis_of(cfg.quant)


def weights_bound(arch: ArchFacts, quant: QuantConfig,
                  embeddings_on_device: bool = True) -> tuple[int, int, int, int]:
    """(bytes, quantized params, params at the dtype, params left on the host) of the
    architecture's weights under the scheme."""
    params = arch.params
    untied_input = (arch.vocab_size * arch.hidden_size
                    if not embeddings_on_device and arch.has_text_model
                    and not arch.tie_word_embeddings else 0)
    params -= untied_input
    if quant.method == "none":
        return params * DTYPE_BYTES[quant.dtype], 0, params, untied_input
    kept = 0
    if quant.method not in _QUANTIZES_EMBEDDINGS and arch.has_text_model:
        kept = embedding_params(arch) - untied_input
    quantized = params - kept
    return (quantized * quant.bits // 8 + kept * DTYPE_BYTES[quant.dtype], quantized, kept,
            untied_input)


def kv_tokens(prompt_tokens: int, new_tokens: int) -> int:
    """Tokens one sequence's cache holds at the end of generation, at least."""
    return prompt_tokens + max(new_tokens - 1, 0)


def kv_cache_dtype_of(engine: str, quant: QuantConfig) -> str:
    """The KV cache's dtype: the engine's own, else the scheme's activation dtype."""
    return capabilities(engine).kv_cache_dtype or quant.dtype


def kv_cache_dtype(cfg: BenchConfig) -> str:
    return kv_cache_dtype_of(cfg.resolved_engine, cfg.quant)


def text_bound(arch: ArchFacts, quant: QuantConfig, engine: str, batch: int,
               prompt_tokens: int, new_tokens: int,
               embeddings_on_device: bool = True,
               kv_value_bytes: Optional[tuple[float, float]] = None) -> Prediction:
    """A text model's bound: weights and the KV cache of batch x kv_tokens (at the cache's
    own type where the engine's settings choose one)."""
    weights, quantized, other, host = weights_bound(arch, quant, embeddings_on_device)
    tokens = kv_tokens(prompt_tokens, new_tokens)
    kv = kv_cache_bytes(arch, kv_cache_dtype_of(engine, quant), batch, tokens, kv_value_bytes)
    return Prediction(weights_bytes=weights, kv_cache_bytes=kv, quantized_params=quantized,
                      other_params=other, kv_tokens=tokens, batch=batch, host_params=host)


def pipeline_bound(arch: ArchFacts, quant: QuantConfig) -> Prediction:
    """A pipeline's bound: its components' weights alone (every one at the scheme's bits
    when it quantizes some, since which the conf does not say), activations on top."""
    if quant.method == "none":
        return Prediction(arch.params * DTYPE_BYTES[quant.dtype], 0, 0, arch.params)
    return Prediction(arch.params * quant.bits // 8, 0, arch.params, 0)


def keeps_layers_on_host(cfg: BenchConfig) -> bool:
    """Whether no device bound holds for the cell: the engine's settings may keep part of
    the model in host RAM. transformers' offload=true is the cell's own budget
    (bench.sweep.cell)."""
    return cfg.engine.may_keep_layers_on_host(cfg.model.arch.num_hidden_layers or 0)


def predict_peak(cfg: BenchConfig) -> Prediction:
    """The cell's bound: its prompt after the deepest of workload.depths (speed at depth
    holds that many tokens more in the cache)."""
    w = cfg.workload
    return text_bound(cfg.model.arch, cfg.quant, cfg.resolved_engine, w.batch_size,
                      max(w.depths or [0]) + w.prompt_tokens, w.new_tokens,
                      embeddings_on_device=cfg.engine.input_embeddings_on_device(),
                      kv_value_bytes=cfg.engine.kv_cache_value_bytes())


def oom_reason(cfg: BenchConfig, prediction: Prediction, capacity: int,
               capacity_basis: str) -> Optional[str]:
    """The skip reason when the lower bound exceeds `capacity`, else None."""
    if prediction.peak_bytes <= capacity:
        return None
    return (f"{PREDICTED_OOM}: peak >= {prediction.peak_bytes / _GIB:.1f} GiB > "
            f"{capacity / _GIB:.1f} GiB {capacity_basis}; basis: {prediction.basis(cfg)}")
