"""Sizes that follow from a model's architecture facts alone (conf/model), nothing loaded:
bytes per element, head size, the attention window, the KV cache per token, the embedding
parameters. One place for the OOM lower bound (bench.tasks.bounds) and the report's analytic KV
cache. A test checks every conf/model's facts against transformers' own config of it.
"""

from __future__ import annotations

from typing import Any, Optional

from bench.core.config import ArchFacts

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _text_fact(arch: ArchFacts, key: str) -> Any:
    """A text-model key of config_overrides (image-text models nest it in text_config)."""
    overrides = arch.config_overrides or {}
    text = overrides.get("text_config") or {}
    return text.get(key) if key in text else overrides.get(key)


def head_dim(arch: ArchFacts) -> int:
    return int(_text_fact(arch, "head_dim") or arch.hidden_size // arch.num_attention_heads)


def sliding_window(arch: ArchFacts) -> Optional[int]:
    """Tokens a sliding-window layer keeps; None for full attention."""
    window = _text_fact(arch, "sliding_window")
    return int(window) if isinstance(window, int) and window > 0 else None


def kv_bytes_per_token(arch: ArchFacts, dtype: str, batch: int = 1,
                       value_bytes: Optional[tuple[float, float]] = None) -> int:
    """Keys and values of every layer for one context token: 2 x layers x KV heads x head
    dim x element bytes x batch; `value_bytes`: bytes per key and per value element where
    the cache has a type of its own (llama.cpp's q8_0: 34 bytes per 32)."""
    elements = arch.num_hidden_layers * arch.num_key_value_heads * head_dim(arch)
    key, value = value_bytes or (DTYPE_BYTES[dtype],) * 2
    return round(elements * (key + value)) * batch


def kv_cache_bytes(arch: ArchFacts, dtype: str, batch: int, tokens: int,
                   value_bytes: Optional[tuple[float, float]] = None) -> int:
    """The KV cache a context of `tokens` needs, at least: a layer with a sliding window may
    keep only the window, so the bound counts no more than the window for every layer."""
    window = sliding_window(arch)
    return (kv_bytes_per_token(arch, dtype, batch, value_bytes)
            * (min(tokens, window) if window else tokens))


def embedding_params(arch: ArchFacts) -> int:
    """Token embeddings and output head: vocab x hidden, once when they are tied."""
    return arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
