"""Weights footprint of a transformers model: the real storage of every tensor it holds.

Not ``get_memory_footprint()``, which misses quantization state (bnb's absmax and nested
double-quant state, HQQ's meta dicts) and reports nf4 and nf4 with double quantization as
the same size.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

_MAX_DEPTH = 4


def _tensors_in(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors held by a parameter or a quantization state object (bnb QuantState, HQQ
    meta dicts, ...), which get_memory_footprint() does not see."""
    if depth > _MAX_DEPTH or obj is None or isinstance(obj, torch.nn.Module):
        return
    if isinstance(obj, torch.Tensor):
        yield obj
        for value in getattr(obj, "__dict__", {}).values():
            yield from _tensors_in(value, depth + 1)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_in(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors_in(value, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for value in vars(obj).values():
            yield from _tensors_in(value, depth + 1)


def _storage_bytes(t: torch.Tensor, seen: set[tuple[str, int]]) -> int:
    """Bytes of t's real storage; tensor subclasses (torchao, quanto) are unpacked into the
    plain tensors they hold, and storage shared by several tensors counts once."""
    if is_traceable_wrapper_subclass(t):
        inner_names, _ = t.__tensor_flatten__()
        return sum(_storage_bytes(getattr(t, name), seen) for name in inner_names)
    if t.device.type == "meta":
        return t.numel() * t.element_size()
    storage = t.untyped_storage()
    key = (str(t.device), storage.data_ptr())
    if key in seen:
        return 0
    seen.add(key)
    return storage.nbytes()


# nn.Module's own bookkeeping (registries, hook dicts): every other instance attribute,
# private ones included, may hold tensors a kernel keeps (gptqmodel's TorchLinear caches
# its unpacked zeros in `_zeros_cache`).
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def weights_bytes(model: torch.nn.Module) -> int:
    """Summed storage of every parameter, buffer and tensor-valued module attribute."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for module in model.modules():
        holders = [module._parameters, module._buffers,
                   {k: v for k, v in vars(module).items()
                    if k not in _MODULE_INTERNALS and not isinstance(v, torch.nn.Module)}]
        for holder in holders:
            for tensor in _tensors_in(holder):
                total += _storage_bytes(tensor, seen)
    return total
