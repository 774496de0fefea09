"""What llama.cpp's log says it allocated on each device (no llama_cpp import: the server
engine reads a llama.cpp server's log with it too)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# "CUDA0 model buffer size =  3577.56 MiB", "CUDA0 KV buffer size = 256.00 MiB", "CUDA0
# compute buffer size = 164.01 MiB" (on a CPU: "CPU_Mapped model buffer size", "CPU KV
# buffer size", ...); "CUDA_Host" buffers are pinned host memory, not the device's
_BUFFER = re.compile(r"\b([A-Za-z]+\d*)(?:_\w+)? +(?:model|KV|compute|output|RS) buffer "
                     r"size = +([0-9.]+) MiB")


def device_buffers(log: str, device: str = "CUDA0") -> Optional[int]:
    """Bytes llama.cpp says it allocated on `device` (model, KV, compute, output buffers)
    in a log, None when it names none there."""
    sizes = [float(m.group(2)) for m in _BUFFER.finditer(log) if m.group(1) == device]
    return int(sum(sizes) * 2**20) if sizes else None


# "llama_kv_cache: size =    2.29 MiB (   256 cells,  30 layers,  1/1 seqs), K (q8_0):
# 1.49 MiB, V (q4_0):    0.79 MiB": a cache llama.cpp made, on every device together
_KV_CACHE = re.compile(r"llama_kv_cache: size = +([0-9.]+) MiB \( *(\d+) cells, +(\d+) "
                       r"layers.*?K \((\w+)\): +[0-9.]+ MiB, V \((\w+)\)")
_COMPUTE = re.compile(r"\b[A-Za-z]+\d*(?:_\w+)? +compute buffer size = +([0-9.]+) MiB")
# the log prints MiB with two decimals: a figure read from it is exact to half of 0.01 MiB
LOG_RESOLUTION_BYTES = 0.005 * 2**20


@dataclass(frozen=True)
class KvCacheLine:
    """llama.cpp's own account of a KV cache it made."""

    bytes: int
    cells: int  # context tokens it holds (n_ctx, rounded up by llama.cpp)
    layers: int
    key_type: str
    value_type: str

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.cells

    @property
    def type_name(self) -> str:
        return kv_type_name(self.key_type, self.value_type)


def kv_type_name(key: str, value: str) -> str:
    """A KV cache's type as a row records it: q8_0, or q8_0/q4_0 when K and V differ."""
    return key if key == value else f"{key}/{value}"


def kv_cache_lines(log: str) -> list[KvCacheLine]:
    """Every KV cache a log of one context made: one, or two for a sliding-window model
    (llama.cpp's iswa cache: the full layers' and the window layers', cells of their own)."""
    return [KvCacheLine(round(float(size) * 2**20), int(cells), int(layers), key, value)
            for size, cells, layers, key, value in
            (m.groups() for m in _KV_CACHE.finditer(log))]


def compute_buffers(log: str) -> Optional[int]:
    """Bytes of compute buffers llama.cpp says it allocated, every device together (the
    last context's: one per device in a log of one context)."""
    sizes = [float(m.group(1)) for m in _COMPUTE.finditer(log)]
    return int(sum(sizes) * 2**20) if sizes else None
