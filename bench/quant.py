"""Quantization schemes: what each conf/quant entry means to transformers and bitsandbytes.

One function per question (which dtype, which load-time config, how to quantize a freshly
built random layer), so the real and the synthetic loading paths apply a scheme the same way.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import BitsAndBytesConfig

from bench.config import QuantConfig

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Output layers stay in full precision, as transformers' quantizers keep them.
KEEP_UNQUANTIZED = ["lm_head"]


def torch_dtype(quant: QuantConfig) -> torch.dtype:
    return _DTYPES[quant.dtype]


def load_time_config(quant: QuantConfig) -> Optional[BitsAndBytesConfig]:
    """The transformers quantization_config for from_pretrained (None: plain dtype)."""
    if quant.method == "none":
        return None
    if quant.method == "bnb":
        if quant.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True,
                                      llm_int8_threshold=quant.llm_int8_threshold,
                                      llm_int8_skip_modules=KEEP_UNQUANTIZED)
        return BitsAndBytesConfig(load_in_4bit=True,
                                  bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
                                  bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
                                  bnb_4bit_compute_dtype=torch_dtype(quant),
                                  llm_int8_skip_modules=KEEP_UNQUANTIZED)
    raise NotImplementedError(f"quant.method={quant.method} is not available in this build")
