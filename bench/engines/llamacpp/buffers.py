"""What llama.cpp's log says it allocated on each device (no llama_cpp import: the server
engine reads a llama.cpp server's log with it too)."""

from __future__ import annotations

import re
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
