"""Where a cell's modules live: pinned to one device, or (offload=true) split between a GPU
budget and host RAM the way ``from_pretrained(device_map="auto", max_memory=...)`` splits them.

Without offload every module is pinned to the cell's device, so a model that does not fit
fails with a real OOM instead of being silently offloaded. With offload, the split is
computed by transformers' own device-map code (module sizes as its quantizer counts them),
for real checkpoints and synthetic weights alike, and the row says how much went to host RAM.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from bench.engines.base import OffloadBudget

DeviceMap = dict[str, Union[int, str]]
_GIB = 2**30


def pinned(device: torch.device) -> DeviceMap:
    """Everything on the one device: nothing may be silently offloaded."""
    return {"": str(device)}


def pretrained_placement(device: torch.device,
                         budget: Optional[OffloadBudget]) -> dict[str, Any]:
    """device_map (and max_memory) keyword arguments of from_pretrained."""
    if budget is None:
        return {"device_map": pinned(device)}
    return {"device_map": "auto", "max_memory": budget.max_memory(device.index or 0)}


def plan_device_map(model: torch.nn.Module, quantization_config: Optional[Any],
                    device: torch.device, budget: OffloadBudget) -> DeviceMap:
    """The device map from_pretrained(device_map="auto") would compute for `model` (built on
    meta, quantized modules already swapped in) under the budget: transformers' public
    device-map functions, with module sizes as its quantizer counts them."""
    from transformers.integrations.accelerate import get_balanced_memory, infer_auto_device_map
    from transformers.quantizers import AutoHfQuantizer

    quantizer = (AutoHfQuantizer.from_config(quantization_config)
                 if quantization_config is not None else None)
    no_split = getattr(model, "_no_split_modules", None)
    memory = get_balanced_memory(model, max_memory=budget.max_memory(device.index or 0),
                                 no_split_module_classes=no_split, hf_quantizer=quantizer,
                                 low_zero=False)
    if quantizer is not None:
        memory = quantizer.adjust_max_memory(memory)
    return infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split,
                                 hf_quantizer=quantizer,
                                 no_placement_params=getattr(model, "_no_placement_params",
                                                             None))


def device_of(qualname: str, device_map: DeviceMap) -> Union[int, str]:
    """The device the map assigns to a module (the longest matching prefix wins)."""
    best, where = -1, device_map.get("", "cpu")
    for prefix, target in device_map.items():
        if prefix and (qualname == prefix or qualname.startswith(prefix + ".")):
            if len(prefix) > best:
                best, where = len(prefix), target
    return where


def as_torch_device(target: Union[int, str]) -> torch.device:
    return torch.device("cuda", target) if isinstance(target, int) else torch.device(target)


def dispatch(model: torch.nn.Module, device_map: DeviceMap, device: torch.device) -> None:
    """accelerate's hooks: modules in host RAM run on `device`, streamed in per forward."""
    from accelerate import dispatch_model

    dispatch_model(model, device_map=device_map, main_device=device,
                   skip_keys=getattr(model, "_skip_keys_device_placement", None))


def on_gpu(target: Union[int, str]) -> bool:
    return isinstance(target, int) or str(target).startswith("cuda")


def host_share(model: torch.nn.Module, device_map: DeviceMap) -> float:
    """Fraction of the parameters the map places in host RAM (or on disk)."""
    host = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if not on_gpu(device_of(name.rpartition(".")[0], device_map)):
            host += param.numel()
    return host / total if total else 0.0


def describe(model: torch.nn.Module, device_map: Optional[DeviceMap],
             budget: OffloadBudget) -> str:
    """One line for the row: how much of the model the budget pushed to host RAM."""
    share = host_share(model, device_map or {"": "cpu"})
    return (f"offload: {100 * share:.0f}% of parameters in host RAM "
            f"(GPU weights budget {budget.gpu_bytes / _GIB:.1f} GiB)")
