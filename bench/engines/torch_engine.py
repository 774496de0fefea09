"""What every in-process PyTorch engine does the same way (transformers, diffusers): the
device, the CUDA context created first, the allocator's cap and peak counters, OOM
recognition, torch's versions. Each engine subclasses it and adds its library's loading."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

import torch

from bench.core.errors import SkipCell
from bench.engines.base import Device, DeviceInfo, Engine, allocator_cap

if TYPE_CHECKING:
    from bench.core.config import BenchConfig


class TorchEngine(Engine):
    """An engine whose model lives in this process as torch modules."""

    quiet_loggers: tuple[str, ...] = ("torchao", "torch.utils._pytree", "bitsandbytes",
                                      "transformers")

    def setup(self, cfg: "BenchConfig") -> None:
        """Library chatter (optional kernels, deprecations) is not a measurement."""
        for name in self.quiet_loggers:
            logging.getLogger(name).setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if cfg.cell.threads:
            torch.set_num_threads(cfg.cell.threads)

    def resolve_device(self, requested: str) -> Device:
        if requested == "cuda" and not torch.cuda.is_available():
            raise SkipCell("needs CUDA: cell.device=cuda but no CUDA device is visible")
        if requested == "cpu" or not torch.cuda.is_available():
            return Device("cpu")
        return Device("cuda", torch.cuda.current_device())

    def start_device(self, cfg: "BenchConfig", device: Device) -> DeviceInfo:
        """The CUDA context, grown as the model's first calls would grow it, before the cell
        measures it: `torch.empty(1)` makes a context without cuBLAS's handle and the GEMM
        kernels CUDA loads lazily on first use (hundreds of MiB on an H100), which a context
        measured there would leave out of every emulated class's cap."""
        where = torch.device("cuda", device.index)
        torch.cuda.init()
        self._create_context(where)
        self._load_kernels(where)
        torch.cuda.synchronize(where)
        props = torch.cuda.get_device_properties(where)
        total = int(props.total_memory)  # what CUDA can allocate: not NVML's total
        return DeviceInfo(props.name, total, total, f"CUDA's total of {props.name} (gpu="
                          f"{cfg.gpu.name})", emulated=False)

    @staticmethod
    def _create_context(where: torch.device) -> None:
        torch.empty(1, device=where)

    @staticmethod
    def _load_kernels(where: torch.device) -> None:
        """A small matrix product in each dtype the schemes compute in: cuBLAS's handle, its
        workspace (which the caching allocator holds) and the GEMM kernels load now."""
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            a = torch.ones(64, 64, device=where, dtype=dtype)
            (a @ a).sum().item()

    def allocator_reserved_bytes(self, device: Device) -> Optional[int]:
        return int(torch.cuda.memory_reserved(device.index))

    def emulate_class(self, cfg: "BenchConfig", device: Device, class_bytes: int,
                      context_bytes: Optional[int]) -> Optional[dict[str, Any]]:
        """Cap the caching allocator at the class minus the measured CUDA context, so that
        allocator and context together fit the class as they would on such a card."""
        where = torch.device("cuda", device.index)
        cap = allocator_cap(class_bytes, context_bytes)
        total = torch.cuda.get_device_properties(where).total_memory
        torch.cuda.set_per_process_memory_fraction(cap / total, where)
        return {"allocator_cap_bytes": cap}

    def synchronize(self, device: Device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device.index)

    def reset_allocator_peaks(self, device: Device) -> None:
        torch.cuda.synchronize(device.index)
        torch.cuda.reset_peak_memory_stats(device.index)

    def allocator_peaks(self, device: Device) -> dict[str, Optional[int]]:
        torch.cuda.synchronize(device.index)
        return {"peak_alloc_bytes": torch.cuda.max_memory_allocated(device.index),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(device.index)}

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, torch.OutOfMemoryError) or super().is_oom(exc):
            return True
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text

    def versions(self) -> dict[str, Optional[str]]:
        return {**super().versions(), "torch": torch.__version__, "cuda": torch.version.cuda}


def torch_device(device: Device) -> torch.device:
    return torch.device(device.type, device.index) if device.type == "cuda" else (
        torch.device("cpu"))
