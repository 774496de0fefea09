"""Which physical GPU a cell's CUDA device is, and what NVML says about it.

The one place bench talks to NVML (pynvml) and to the CUDA driver. NVML numbers devices in
PCI order and ignores CUDA_VISIBLE_DEVICES; CUDA renumbers them (CUDA_VISIBLE_DEVICES,
CUDA_DEVICE_ORDER, MIG slices). So a CUDA ordinal is never used as an NVML index: the CUDA
driver is asked for the device's UUID (and PCI bus id), and NVML's device (or MIG device)
with that UUID is the one watched.

No heavy import: the CUDA driver is reached through ctypes, so an engine that does not use
torch (llama.cpp, a server's client) identifies its device the same way.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Optional

_UUID_PREFIXES = ("GPU-", "MIG-")


class GpuLookupError(RuntimeError):
    """The CUDA device in use has no NVML counterpart (or NVML/the driver is missing)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def uuid_key(uuid: str) -> str:
    """A UUID as NVML, CUDA and torch each print it, reduced to its hex digits."""
    text = uuid.strip()
    for prefix in _UUID_PREFIXES:
        if text.upper().startswith(prefix):
            text = text[len(prefix):]
    return text.replace("-", "").lower()


def pci_key(bus_id: str) -> str:
    """A PCI bus id as CUDA ("0000:3B:00.0") and NVML ("00000000:3B:00.0") print it."""
    parts = bus_id.strip().lower().split(":")
    if len(parts) == 2:  # no domain
        parts = ["0", *parts]
    domain, bus, device_function = parts
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{device_function}"


# --- the CUDA driver ------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaIds:
    """How the CUDA driver identifies one of its devices."""

    ordinal: int
    uuid: Optional[str]  # "GPU-…" or, for a MIG slice, the slice's UUID
    pci_bus_id: Optional[str]
    name: Optional[str] = None
    # what CUDA can allocate (cuDeviceTotalMem): below NVML's total, which counts memory the
    # driver reserves (an RTX 4090: 23.6 GiB against nvidia-smi's 24,564 MiB)
    total_bytes: Optional[int] = None


class CudaDriver:
    """libcuda through ctypes: device count, UUID and PCI bus id of a CUDA ordinal, in the
    numbering this process sees (CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER applied)."""

    def __init__(self) -> None:
        try:
            self._lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise GpuLookupError(f"no CUDA driver (libcuda.so.1): {exc}") from None
        self._call("cuInit", 0)

    def _call(self, name: str, *args: Any) -> None:
        code = getattr(self._lib, name)(*args)
        if code != 0:
            raise GpuLookupError(f"CUDA driver {name} returned {code}")

    def device_count(self) -> int:
        count = ctypes.c_int()
        self._call("cuDeviceGetCount", ctypes.byref(count))
        return count.value

    def ids(self, ordinal: int) -> CudaIds:
        dev = ctypes.c_int()
        self._call("cuDeviceGet", ctypes.byref(dev), ordinal)
        raw = (ctypes.c_ubyte * 16)()
        getter = "cuDeviceGetUuid_v2" if hasattr(self._lib, "cuDeviceGetUuid_v2") else (
            "cuDeviceGetUuid")
        self._call(getter, raw, dev)
        b = bytes(raw).hex()
        uuid = f"GPU-{b[:8]}-{b[8:12]}-{b[12:16]}-{b[16:20]}-{b[20:]}"
        bus = ctypes.create_string_buffer(64)
        self._call("cuDeviceGetPCIBusId", bus, 64, dev)
        name = ctypes.create_string_buffer(256)
        self._call("cuDeviceGetName", name, 256, dev)
        total = ctypes.c_size_t()
        self._call("cuDeviceTotalMem_v2", ctypes.byref(total), dev)
        return CudaIds(ordinal, uuid, bus.value.decode(), name.value.decode(), total.value)


def cuda_ids(ordinal: int) -> CudaIds:
    """The UUID and PCI bus id of CUDA device `ordinal` as this process numbers it."""
    return CudaDriver().ids(ordinal)


# --- NVML -----------------------------------------------------------------------------------


def nvml() -> Any:
    """pynvml, initialised (GpuLookupError where there is no NVML library or driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, no permission
        raise GpuLookupError(f"NVML unavailable: {exc}") from None
    return pynvml


@dataclass(frozen=True)
class NvmlProcess:
    pid: int
    used_bytes: Optional[int]


class NvmlDevice:
    """One NVML device (a whole GPU, or a MIG slice) and the facts bench records of it."""

    def __init__(self, lib: Any, handle: Any, mig_parent: Optional[Any] = None) -> None:
        self.lib = lib
        self.handle = handle
        self.mig_parent = mig_parent  # the whole GPU's handle when this is a MIG slice

    @property
    def is_mig(self) -> bool:
        return self.mig_parent is not None

    def uuid(self) -> str:
        return _text(self.lib.nvmlDeviceGetUUID(self.handle))

    def name(self) -> str:
        return _text(self.lib.nvmlDeviceGetName(self.handle))

    def total_bytes(self) -> int:
        return int(self.lib.nvmlDeviceGetMemoryInfo(self.handle).total)

    def used_bytes(self) -> int:
        """Memory in use on the device, by every process and the driver."""
        return int(self.lib.nvmlDeviceGetMemoryInfo(self.handle).used)

    def processes(self) -> list[NvmlProcess]:
        """Processes with a context on the device, as the driver numbers them (inside a
        container these are the host's PIDs, not ours)."""
        found: dict[int, Optional[int]] = {}
        for getter in ("nvmlDeviceGetComputeRunningProcesses",
                       "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs = getattr(self.lib, getter)(self.handle)
            except Exception:  # not supported on this device (a MIG slice's graphics)
                continue
            for proc in procs:
                used = proc.usedGpuMemory
                used = int(used) if used is not None else None
                previous = found.get(int(proc.pid))
                found[int(proc.pid)] = max(filter(None, (previous, used)), default=used)
        return [NvmlProcess(pid, used) for pid, used in sorted(found.items())]

    def _whole(self) -> Any:
        return self.mig_parent if self.mig_parent is not None else self.handle

    def _optional(self, call: str, *args: Any) -> Any:
        try:
            return getattr(self.lib, call)(*args)
        except Exception:  # not supported by this GPU, driver or slice
            return None

    def pci_bus_id(self) -> Optional[str]:
        info = self._optional("nvmlDeviceGetPciInfo", self._whole())
        return _text(info.busId) if info is not None else None

    def power_limit_w(self) -> Optional[float]:
        limit = self._optional("nvmlDeviceGetEnforcedPowerLimit", self._whole())
        return limit / 1000.0 if limit is not None else None

    def clocks_mhz(self) -> tuple[Optional[int], Optional[int]]:
        """(SM, memory) clocks now."""
        lib, whole = self.lib, self._whole()
        sm = self._optional("nvmlDeviceGetClockInfo", whole, getattr(lib, "NVML_CLOCK_SM", 1))
        mem = self._optional("nvmlDeviceGetClockInfo", whole, getattr(lib, "NVML_CLOCK_MEM", 2))
        return sm, mem

    def utilization_pct(self) -> Optional[int]:
        """NVML's "GPU utilization": the percent of its last sample period during which one or
        more kernels ran (not how many SMs they kept busy; not per MIG slice)."""
        rates = self._optional("nvmlDeviceGetUtilizationRates", self._whole())
        return int(rates.gpu) if rates is not None else None

    def peak_bandwidth_gbs(self) -> Optional[float]:
        """Peak memory bandwidth in GB/s from the device itself: 2 transfers per cycle of its
        maximum memory clock (NVML's clocks are what nvidia-smi prints: 2619 MHz on an H100
        SXM, 1593 on an H100 PCIe, 10501 on an RTX 4090) over its memory bus width (5120,
        5120, 384 bits): 3352, 2039, 1008 GB/s, the datasheets' figures. None where NVML
        does not say."""
        lib, whole = self.lib, self._whole()
        mhz = self._optional("nvmlDeviceGetMaxClockInfo", whole,
                             getattr(lib, "NVML_CLOCK_MEM", 2))
        bits = self._optional("nvmlDeviceGetMemoryBusWidth", whole)
        if not mhz or not bits:
            return None
        return round(2 * int(mhz) * 1e6 * int(bits) / 8 / 1e9, 1)

    def facts(self) -> dict[str, Any]:
        """Row provenance of the device: UUID, PCI id, MIG, power limit, peak bandwidth,
        driver and CUDA."""
        return {"gpu_uuid": self.uuid(), "gpu_pci_bus_id": self.pci_bus_id(),
                "gpu_mig": self.is_mig, "gpu_power_limit_w": self.power_limit_w(),
                "gpu_peak_bandwidth_gbs": self.peak_bandwidth_gbs(),
                "driver": driver_version(self.lib), "cuda_driver": cuda_driver_version(self.lib)}


def driver_version(lib: Any) -> str:
    return _text(lib.nvmlSystemGetDriverVersion())


def cuda_driver_version(lib: Any) -> Optional[str]:
    """The newest CUDA version the driver supports ("12.4"), as nvidia-smi prints it."""
    getter = getattr(lib, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(
        lib, "nvmlSystemGetCudaDriverVersion", None)
    if getter is None:
        return None
    try:
        version = int(getter())
    except Exception:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _mig_slices(lib: Any, handle: Any) -> list[Any]:
    """The MIG devices of a GPU in MIG mode (none otherwise)."""
    try:
        current, _ = lib.nvmlDeviceGetMigMode(handle)
    except Exception:  # not MIG-capable
        return []
    if not current:
        return []
    slices = []
    for j in range(int(lib.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            slices.append(lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, j))
        except Exception:  # an index with no slice configured
            continue
    return slices


def nvml_devices(lib: Any) -> list[NvmlDevice]:
    """Every GPU NVML lists, each followed by its MIG slices."""
    out: list[NvmlDevice] = []
    for i in range(int(lib.nvmlDeviceGetCount())):
        handle = lib.nvmlDeviceGetHandleByIndex(i)
        out.append(NvmlDevice(lib, handle))
        out += [NvmlDevice(lib, mig, mig_parent=handle) for mig in _mig_slices(lib, handle)]
    return out


def nvml_device(ids: CudaIds, lib: Optional[Any] = None) -> NvmlDevice:
    """NVML's device for a CUDA device: by UUID (a MIG slice's own, on MIG), else by PCI bus
    id (a whole GPU), never by index."""
    lib = lib or nvml()
    devices = nvml_devices(lib)
    if ids.uuid:
        for dev in devices:
            if uuid_key(dev.uuid()) == uuid_key(ids.uuid):
                return dev
    if ids.pci_bus_id:
        for dev in devices:
            bus = dev.pci_bus_id()
            if not dev.is_mig and bus and pci_key(bus) == pci_key(ids.pci_bus_id):
                return dev
    raise GpuLookupError(f"NVML lists no device with the UUID {ids.uuid} or PCI bus id "
                         f"{ids.pci_bus_id} of CUDA device {ids.ordinal}")


def device_for_ordinal(ordinal: int) -> NvmlDevice:
    """NVML's device for CUDA device `ordinal` of this process."""
    return nvml_device(cuda_ids(ordinal))


def sees_gpu() -> bool:
    """Whether the driver shows this machine an NVIDIA GPU (no NVML, no driver: no)."""
    try:
        return int(nvml().nvmlDeviceGetCount()) > 0
    except Exception:
        return False
