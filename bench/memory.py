"""Memory measurement: weights storage, host RSS peaks, CUDA allocator and NVML device peaks.

Runs inside the cell's child process. Pollers sleep between samples so they never compete
with the model for the CPU (DESIGN.md: a spinning thread distorts the speed figures).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import psutil
import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

# --- weights ---------------------------------------------------------------------------

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


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the (unquantized) architecture, tied weights counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# --- host RAM ----------------------------------------------------------------------------


def _vm_hwm_bytes() -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class HostPeak:
    """Peak resident memory of this process over a phase.

    Uses the kernel's own high-water mark (VmHWM, reset through /proc/self/clear_refs):
    exact and free. Where that is unavailable, a psutil poller sleeping 10 ms between
    samples stands in.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval = interval_s
        self._proc = psutil.Process()
        self._use_hwm = self._can_reset_hwm()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def _can_reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return _vm_hwm_bytes() is not None
        except OSError:
            return False

    def current(self) -> int:
        return self._proc.memory_info().rss

    def start(self) -> None:
        self._peak = self.current()
        if self._use_hwm:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self.current())

    def stop(self) -> int:
        """Peak RSS in bytes since start()."""
        if self._use_hwm:
            return max(self._peak, _vm_hwm_bytes() or 0, self.current())
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return max(self._peak, self.current())


# --- CUDA ----------------------------------------------------------------------------------


@dataclass
class DeviceMemory:
    peak_alloc_bytes: Optional[int] = None
    peak_reserved_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None


class NvmlPeak:
    """Per-process device memory seen by the driver (CUDA context included), polled every
    10 ms in a sleeping thread, as optimum-benchmark's NVML tracker does."""

    def __init__(self, device_index: int, interval_s: float = 0.01) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self._pid = os.getpid()
        self._interval = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def used_bytes(self) -> Optional[int]:
        for getter in ("nvmlDeviceGetComputeRunningProcesses",
                       "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in getattr(self._nvml, getter)(self._handle):
                if proc.pid == self._pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        return None  # inside a container the driver may not map our pid

    def total_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total)

    def driver_version(self) -> str:
        version = self._nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)

    def start(self) -> None:
        self._peak = self.used_bytes() or 0
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            used = self.used_bytes()
            if used is not None:
                self._peak = max(self._peak, used)

    def peak(self) -> Optional[int]:
        """Peak so far; None when the driver never attributed memory to this process."""
        used = self.used_bytes()
        if used is not None:
            self._peak = max(self._peak, used)
        return self._peak or None

    def stop(self) -> Optional[int]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.peak()


def cuda_allocator_peaks(device: torch.device) -> DeviceMemory:
    torch.cuda.synchronize(device)
    return DeviceMemory(peak_alloc_bytes=torch.cuda.max_memory_allocated(device),
                        peak_reserved_bytes=torch.cuda.max_memory_reserved(device))


def reset_cuda_peaks(device: torch.device) -> None:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
