"""Quantization schemes: what each conf/quant entry means to the library that applies it.

One function per question (can it run here, which dtype, which load-time config, how to
quantize one freshly built layer), so the real, tiny and synthetic loading paths apply a
scheme the same way. Optional libraries (torchao, hqq, gptqmodel) are imported only inside
the functions of their own scheme: a cell imports what its scheme needs and nothing else.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Optional

import torch
from transformers import BitsAndBytesConfig

from bench.core.config import QuantConfig
from bench.core.errors import SkipCell

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Output layers stay in full precision, as transformers' quantizers keep them.
KEEP_UNQUANTIZED = ["lm_head"]
# method -> (module it imports, the pyproject extra that installs it)
_REQUIRES = {"bnb": ("bitsandbytes", None), "torchao": ("torchao", "torchao"),
             "hqq": ("hqq", "hqq"), "gptq": ("gptqmodel", "gptq"), "awq": ("gptqmodel", "awq")}


def torch_dtype(quant: QuantConfig) -> torch.dtype:
    return _DTYPES[quant.dtype]


def check_runnable(quant: QuantConfig, device: torch.device) -> None:
    """Raise SkipCell (a `skipped` row with the reason) when the scheme cannot run here:
    never a crash deep inside a library, never a silent fallback to another scheme."""
    if quant.requires_cuda and device.type != "cuda":
        raise SkipCell(f"needs CUDA: quant={quant.name} runs on CUDA devices only")
    module, extra = _REQUIRES.get(quant.method, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        how = f"pip install bench[{extra}]" if extra else f"pip install {module}"
        raise SkipCell(f"quant={quant.name} needs {module}, not installed: {how}")


def load_time_config(quant: QuantConfig, offload: bool = False) -> Optional[Any]:
    """The transformers quantization_config for from_pretrained (None: plain dtype, or a
    scheme bench applies itself after loading). `offload`: modules may land in host RAM."""
    if quant.method == "bnb":
        if quant.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True,
                                      llm_int8_threshold=quant.llm_int8_threshold,
                                      llm_int8_skip_modules=KEEP_UNQUANTIZED,
                                      llm_int8_enable_fp32_cpu_offload=offload)
        return BitsAndBytesConfig(load_in_4bit=True,
                                  bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
                                  bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
                                  bnb_4bit_compute_dtype=torch_dtype(quant),
                                  llm_int8_skip_modules=KEEP_UNQUANTIZED,
                                  llm_int8_enable_fp32_cpu_offload=offload)
    if quant.method == "torchao":
        from transformers import TorchAoConfig

        return TorchAoConfig(quant_type=torchao_config(quant),
                             modules_to_not_convert=KEEP_UNQUANTIZED)
    return None


# --- torchao -------------------------------------------------------------------------------


def torchao_config(quant: QuantConfig) -> Any:
    """torchao's own config object for the scheme (the same for TorchAoConfig and the
    per-layer quantize_ of synthetic weights)."""
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    if quant.torchao_kind == "int8wo":
        return Int8WeightOnlyConfig()
    if quant.torchao_kind == "int8da":
        return Int8DynamicActivationInt8WeightConfig()
    # tinygemm's CUDA layout: the int4 kernels of torchao that run on every recent NVIDIA GPU
    return Int4WeightOnlyConfig(group_size=quant.group_size,
                                int4_packing_format="tile_packed_to_4d")


def quantize_torchao_(linear: torch.nn.Linear, quant: QuantConfig) -> None:
    """Quantize one materialised Linear in place, as TorchAoConfig does during load."""
    from torchao.quantization import quantize_

    quantize_(linear, torchao_config(quant))


# --- HQQ -----------------------------------------------------------------------------------


def hqq_linear(linear: torch.nn.Linear, quant: QuantConfig,
               device: torch.device) -> torch.nn.Module:
    """One Linear quantized by the hqq library itself (transformers 5's HqqConfig raises
    NotImplementedError). The original weight is freed as soon as it is quantized."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=quant.bits, group_size=quant.group_size,
                                axis=quant.hqq_axis)
    return HQQLinear(linear, config, del_orig=True, compute_dtype=torch_dtype(quant),
                     device=str(device))


def is_quantizable_linear(name: str, module: torch.nn.Module,
                          keep: Optional[list[str]] = None) -> bool:
    """The Linear layers a weight quantizer replaces (everything but the output head, or
    the modules `keep` names)."""
    keep = KEEP_UNQUANTIZED if keep is None else keep
    return isinstance(module, torch.nn.Linear) and name.split(".")[-1] not in keep


def quantized_params(model: torch.nn.Module) -> int:
    """Parameters the scheme actually holds in quantized form (bnb / HQQ layers, torchao
    tensor subclasses): a library may leave layers alone (transformers' bnb integration
    converts exact nn.Linear only, not Falcon's FalconLinear or Mixtral's 3-D experts)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    total = 0
    for module in model.modules():
        if module.__class__.__module__.split(".")[0] in ("bitsandbytes", "hqq"):
            total += int(module.in_features) * int(module.out_features)
        else:
            total += sum(p.numel() for p in module.parameters(recurse=False)
                         if is_traceable_wrapper_subclass(p))
    return total


def quantize_hqq_(model: torch.nn.Module, quant: QuantConfig, device: torch.device) -> float:
    """Replace every quantizable Linear with an HQQLinear on `device` (from wherever the
    float weights were loaded), then move what is left (embeddings, norms, the head) there;
    returns the seconds it took."""
    start = time.perf_counter()
    quantized: set[int] = set()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_quantizable_linear(name, child):
                layer = hqq_linear(child, quant, device)
                quantized.add(id(layer))
                setattr(parent, name, layer)
    moved: dict[int, torch.nn.Parameter] = {}  # tied weights (embedding, head) stay tied
    for module in model.modules():
        if id(module) in quantized:
            continue
        for pname, param in list(module.named_parameters(recurse=False)):
            if param.device != device:
                if id(param) not in moved:
                    moved[id(param)] = torch.nn.Parameter(param.data.to(device),
                                                          requires_grad=False)
                setattr(module, pname, moved[id(param)])
        for bname, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.device != device:
                module._buffers[bname] = buf.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
