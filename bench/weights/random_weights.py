"""Random weights for an architecture built on the meta device: reproducible from a seed on
any device, drawn where they are stored. The synthetic weights of every engine and the tiny
pipelines the tests use start here."""

from __future__ import annotations

import torch

INIT_STD = 0.02  # the initializer_range of Llama-family configs


class SeededRandom:
    """Random weights from one seed whatever the device: a generator per device, each seeded
    with the cell's seed, so CUDA cells are as reproducible as CPU ones and the values are
    drawn where they are stored (no host-side copy on the way to the GPU)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def normal(self, shape: torch.Size, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = self._generators[key] = torch.Generator(device=device).manual_seed(self._seed)
        return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, INIT_STD,
                                                                     generator=gen)


def materialize_module(module: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                 rand: SeededRandom) -> None:
    """Random values (ones for norms) for the module's own parameters still on meta."""
    for name, param in list(module.named_parameters(recurse=False)):
        if param.device.type != "meta":
            continue
        if "norm" in type(module).__name__.lower():
            value = torch.ones(param.shape, dtype=dtype, device=device)
        else:
            value = rand.normal(param.shape, dtype, device)
        setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    for name, buf in list(module.named_buffers(recurse=False)):
        module._buffers[name] = buf.to(device)


def materialize_random(model: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                       seed: int) -> torch.nn.Module:
    """Every parameter still on meta, module by module (no quantization)."""
    rand = SeededRandom(seed)
    for module in model.modules():
        materialize_module(module, dtype, device, rand)
    return model.eval()
