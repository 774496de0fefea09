"""A fake NVML (the `pynvml` module of nvidia-ml-py) at the library boundary: the GPUs, MIG
slices, processes, clocks and energy counters a test describes, so that bench's real device
selection, attribution and fallback code runs on a machine without a GPU.

The state is a dict (`STATE`), read on every call: a test changes it while a poller runs.
Another process gets it from the JSON file named by $FAKE_NVML (the doctor and plan tests put
this directory first on PYTHONPATH). Each device: uuid, name, pci, total, used, procs
[{pid, used}], optional mig [slices with uuid, total, used, procs], power_mw, clocks
[sm, mem], optional max_clocks [sm, mem] and bus_bits, util, energy_mj.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_VALUE_NOT_AVAILABLE = 2**64 - 1  # pynvml: NVML_VALUE_NOT_AVAILABLE_ulonglong.value


class NVMLError(Exception):
    pass


def _load() -> dict[str, Any]:
    path = os.environ.get("FAKE_NVML")
    if path:
        with open(path) as fh:
            return json.load(fh)
    return {"driver": "550.54.15", "cuda": 12040, "devices": []}


STATE: dict[str, Any] = _load()


def _device(handle: tuple) -> dict[str, Any]:
    gpu = STATE["devices"][handle[1]]
    return gpu["mig"][handle[2]] if handle[0] == "mig" else gpu


def nvmlInit() -> None:
    if STATE.get("fail_init"):
        raise NVMLError("NVML Shared Library Not Found")


def nvmlShutdown() -> None:
    return None


def nvmlSystemGetDriverVersion() -> str:
    return STATE["driver"]


def nvmlSystemGetCudaDriverVersion_v2() -> int:
    return STATE["cuda"]


def nvmlDeviceGetCount() -> int:
    return len(STATE["devices"])


def nvmlDeviceGetHandleByIndex(index: int) -> tuple:
    if not 0 <= index < len(STATE["devices"]):
        raise NVMLError("Invalid Argument")
    return ("gpu", index)


def nvmlDeviceGetUUID(handle: tuple) -> str:
    return _device(handle)["uuid"]


def nvmlDeviceGetName(handle: tuple) -> str:
    return _device(handle).get("name", "NVIDIA Fake")


def nvmlDeviceGetMemoryInfo(handle: tuple) -> Any:
    dev = _device(handle)
    return SimpleNamespace(total=dev["total"], used=dev["used"],
                           free=dev["total"] - dev["used"])


def nvmlDeviceGetComputeRunningProcesses(handle: tuple) -> list[Any]:
    """As pynvml returns them: a process whose figure NVML does not have
    (NVML_VALUE_NOT_AVAILABLE, 2**64 - 1) has usedGpuMemory None; a test writes None or
    that raw value."""
    return [SimpleNamespace(pid=p["pid"], usedGpuMemory=None if p.get("used") in (
        None, NVML_VALUE_NOT_AVAILABLE) else p["used"])
        for p in _device(handle).get("procs", [])]


def nvmlDeviceGetGraphicsRunningProcesses(handle: tuple) -> list[Any]:
    return []


def nvmlDeviceGetPciInfo(handle: tuple) -> Any:
    return SimpleNamespace(busId=_device(handle)["pci"])


def nvmlDeviceGetMigMode(handle: tuple) -> tuple[int, int]:
    on = int(bool(_device(handle).get("mig")))
    return on, on


def nvmlDeviceGetMaxMigDeviceCount(handle: tuple) -> int:
    return 7 if _device(handle).get("mig") else 0


def nvmlDeviceGetMigDeviceHandleByIndex(handle: tuple, index: int) -> tuple:
    slices = _device(handle).get("mig") or []
    if index >= len(slices):
        raise NVMLError("Not Found")
    return ("mig", handle[1], index)


def nvmlDeviceGetEnforcedPowerLimit(handle: tuple) -> int:
    return _device(handle).get("power_mw", 700000)


def nvmlDeviceGetClockInfo(handle: tuple, which: int) -> int:
    sm, mem = _device(handle).get("clocks", [1980, 3201])
    return sm if which == NVML_CLOCK_SM else mem


def nvmlDeviceGetMaxClockInfo(handle: tuple, which: int) -> int:
    """The device's maximum clocks (an H100 SXM's memory clock is 2619 MHz)."""
    dev = _device(handle)
    if "max_clocks" not in dev:
        raise NVMLError("Not Supported")
    sm, mem = dev["max_clocks"]
    return sm if which == NVML_CLOCK_SM else mem


def nvmlDeviceGetMemoryBusWidth(handle: tuple) -> int:
    dev = _device(handle)
    if "bus_bits" not in dev:
        raise NVMLError("Not Supported")
    return dev["bus_bits"]


def nvmlDeviceGetUtilizationRates(handle: tuple) -> Any:
    return SimpleNamespace(gpu=_device(handle).get("util", 0), memory=0)


def nvmlDeviceGetTotalEnergyConsumption(handle: tuple) -> int:
    dev = _device(handle)
    if "energy_mj" not in dev:
        raise NVMLError("Not Supported")
    return dev["energy_mj"]
