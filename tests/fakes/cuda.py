"""A fake CUDA driver (bench.core.gpu.CudaDriver's interface) over the fake NVML's GPUs: device
ordinals as CUDA numbers them under CUDA_VISIBLE_DEVICES (indices, GPU-… or MIG-… UUIDs)."""

from __future__ import annotations

import os
from typing import Any

from bench.core.gpu import CudaIds
from tests.fakes import pynvml


def _visible() -> list[dict[str, Any]]:
    gpus = pynvml.STATE["devices"]
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return [g for g in gpus if not g.get("mig")]
    out = []
    for token in filter(None, (t.strip() for t in spec.split(","))):
        if token.isdigit():
            out.append(gpus[int(token)])
            continue
        matches = [d for g in gpus for d in [g, *g.get("mig", [])] if d["uuid"] == token]
        if not matches:
            break  # CUDA stops at the first invalid entry
        out.append(matches[0])
    return out


class FakeCudaDriver:
    def __init__(self) -> None:
        self.devices = _visible()

    def device_count(self) -> int:
        return len(self.devices)

    def ids(self, ordinal: int) -> CudaIds:
        dev = self.devices[ordinal]
        # the driver's UUID has no MIG- prefix; a MIG slice's is its own UUID
        raw = dev["uuid"].replace("MIG-", "GPU-")
        return CudaIds(ordinal, raw, dev.get("pci"), dev.get("name"), dev.get("cuda_total"))
