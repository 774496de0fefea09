"""The KV cache llama.cpp makes at the type engine.kv_cache asks for (-ctk / -ctv): the
type ids it is given, and what a row records of the cache from llama.cpp's own log (its
bytes, per token) beside the formula for llama.cpp's layout (ggml blocks: q8_0 holds 32
values in 34 bytes). No llama_cpp import (a server's log is plain text too; bench does not
read a llama.cpp server's KV line yet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.core.sizes import kv_bytes_per_token
from bench.engines.llamacpp.buffers import compute_buffers, kv_cache_lines

if TYPE_CHECKING:
    from bench.core.config import BenchConfig


def ggml_types(pair: tuple[str, str]) -> tuple[int, int]:
    """ggml_type ids of a key and a value type (gguf's enum is ggml's)."""
    from gguf.constants import GGMLQuantizationType

    key, value = (GGMLQuantizationType[name.upper()].value for name in pair)
    return key, value


def formula_bytes_per_token(cfg: "BenchConfig") -> int:
    """KV bytes per context token at the cell's types: 2 x layers x KV heads x head dim x
    bytes per element (f16: 2; q8_0: 34 / 32; q4_0: 18 / 32), K and V each at its own."""
    return kv_bytes_per_token(cfg.model.arch, "float16", 1, cfg.engine.kv_cache_value_bytes())


def kv_cache_facts(log: str, cfg: "BenchConfig") -> dict[str, Any]:
    """Row fields of the KV cache one llama.cpp context made, from its log: its type, bytes
    and bytes per token (where one cache holds every layer; a sliding-window model's two
    caches have cells of their own), the formula's bytes per token, the compute buffers."""
    lines = kv_cache_lines(log)
    out: dict[str, Any] = {"kv_cache_type": cfg.engine.kv_cache_name(),
                           "kv_cache_bytes_per_token_formula": formula_bytes_per_token(cfg),
                           "compute_buffer_bytes": compute_buffers(log)}
    if lines:
        out["kv_cache_type"] = lines[0].type_name
        out["kv_cache_bytes"] = sum(line.bytes for line in lines)
        out["kv_cache_cells"] = lines[0].cells if len(lines) == 1 else None
        out["kv_cache_bytes_per_token"] = (lines[0].bytes_per_token if len(lines) == 1
                                           else None)
    return out


def kv_words(cfg: "BenchConfig") -> str:
    """What a cell's note says of a KV type other than the default."""
    engine = cfg.engine
    if engine.kv_cache is None:
        return ""
    forced = engine.flash_attn is None and engine.flash_attention()
    return (f", KV cache {engine.kv_cache_name()}"
            + (" (flash attention on: llama.cpp quantizes V only with it)" if forced else ""))
