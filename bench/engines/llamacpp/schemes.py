"""The GGUF schemes llama.cpp runs, as rules on a conf/quant entry (light: no llama_cpp)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.core.config import QuantRule, choose
from bench.core.errors import BenchInputError

if TYPE_CHECKING:
    from bench.core.config import QuantConfig

# GGUF tensor types llama.cpp's own quantizer writes without an importance matrix, and their
# nominal bits per weight (the K-quant mixes keep some tensors at more bits: weights_bytes says
# how many the file really holds).
GGUF_TYPES: dict[str, int] = {
    "F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q5_K_S": 5,
    "Q5_1": 5, "Q5_0": 5, "Q4_K_M": 4, "Q4_K_S": 4, "Q4_1": 4, "Q4_0": 4, "IQ4_XS": 4,
    "IQ4_NL": 4, "Q3_K_L": 3, "Q3_K_M": 3, "Q3_K_S": 3, "Q2_K": 2}


def _gguf(quant: "QuantConfig") -> None:
    choose("quant.gguf_type", quant.gguf_type, tuple(GGUF_TYPES))
    expected = GGUF_TYPES[str(quant.gguf_type)]
    if quant.bits != expected:
        raise BenchInputError(f"quant.bits={quant.bits} does not match quant.gguf_type="
                              f"{quant.gguf_type} (expected {expected})")
    if quant.dtype != "float16":
        raise BenchInputError(f"quant.dtype={quant.dtype} is not valid for gguf: llama.cpp "
                              f"keeps its KV cache in float16 (quant.dtype=float16)")


QUANT_RULES = {"gguf": QuantRule(frozenset({"gguf_type", "prequantized"}), _gguf)}
