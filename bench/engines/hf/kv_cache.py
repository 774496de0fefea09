"""The KV cache transformers really keeps, read from its cache tensors (not the formula):
one untimed forward pass of a few tokens, the bytes of every layer's keys and values per
token, beside the formula for the same dtype (2 x layers x KV heads x head dim x bytes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench.core.sizes import kv_bytes_per_token

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

PROBE_TOKENS = 16  # below any sliding window, so every layer holds every token


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """Every key and value tensor a transformers cache holds (its layers' keys / values)."""
    return [t for layer in cache.layers for t in (layer.keys, layer.values)
            if isinstance(t, torch.Tensor)]


def kv_cache_facts(model: torch.nn.Module, device: torch.device,
                   cfg: "BenchConfig") -> dict[str, Any]:
    """Row fields of the cache a text model keeps: its dtype, bytes per token from its
    tensors after a PROBE_TOKENS forward pass, and the formula's for that dtype."""
    ids = torch.full((1, PROBE_TOKENS), int(model.config.bos_token_id or 0), device=device)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    tensors = cache_tensors(cache)
    if not tensors:
        return {}
    held = sum(t.numel() * t.element_size() for t in tensors)
    dtype = str(tensors[0].dtype).removeprefix("torch.")
    del cache, tensors
    return {"kv_cache_type": dtype, "kv_cache_bytes_per_token": held / PROBE_TOKENS,
            # transformers keeps its cache at the scheme's activation dtype
            "kv_cache_bytes_per_token_formula": kv_bytes_per_token(cfg.model.arch,
                                                                   cfg.quant.dtype)}
