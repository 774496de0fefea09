"""CUDA logic on a machine without a GPU: a fake NVML (tests/fakes/pynvml.py) and a fake CUDA
driver at the library boundary drive bench's real device selection, attribution, fallback
and cap arithmetic. What only a GPU can show is in `make gpu-check` (README: On a GPU)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core import gpu
from bench.core.errors import SkipCell
from bench.engines.base import Device, allocator_cap, card_device_info
from bench.meters import device_memory as memory
from bench.sweep.plan import make_plan
from tests.conftest import REPO
from tests.fakes import pynvml as fake_nvml
from tests.fakes.cuda import FakeCudaDriver

GIB = 2**30
H100 = 81559 * 2**20  # NVML's total of an H100 80GB HBM3 (nvidia-smi memory.total)
H100_CUDA = int(79.11 * GIB)  # what CUDA gives on it (PyTorch's "total capacity of 79.11 GiB")


def _gpu(i: int, **extra: object) -> dict:
    return {"uuid": f"GPU-0000000{i}-1111-2222-3333-44444444444{i}", "name": f"NVIDIA H100 #{i}",
            "pci": f"00000000:{0x18 + 0x20 * i:02X}:00.0", "total": H100,
            "cuda_total": H100_CUDA, "used": 0, "procs": [], **extra}


THREE_GPUS = {"driver": "550.54.15", "cuda": 12040, "devices": [_gpu(0), _gpu(1), _gpu(2)]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """The fake NVML as `pynvml`, the fake CUDA driver as bench.core.gpu's, a fresh state."""
    state = copy.deepcopy(THREE_GPUS)
    monkeypatch.setattr(fake_nvml, "STATE", state)
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    monkeypatch.setattr(gpu, "CudaDriver", FakeCudaDriver)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return state


def test_renumbered_devices_are_found_by_uuid_not_by_index(fake, monkeypatch) -> None:
    """CUDA_VISIBLE_DEVICES=2,0: CUDA's device 0 is NVML's device 2. Taking NVML's index 0
    (what bench did) would watch a card the cell never touches."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    found = gpu.device_for_ordinal(0)
    assert found.uuid() == fake["devices"][2]["uuid"]
    assert gpu.device_for_ordinal(1).uuid() == fake["devices"][0]["uuid"]
    wrong = fake_nvml.nvmlDeviceGetHandleByIndex(0)
    assert fake_nvml.nvmlDeviceGetUUID(wrong) != found.uuid()
    # the engines' own capacity comes from the same lookup: what CUDA can allocate there,
    # not NVML's total (which counts the driver's reserve: 81,559 MiB against 79.11 GiB)
    fake["devices"][2]["cuda_total"] = 39 * GIB
    c = make_plan(["model=tiny-llama", "eval=none", "cell.device=cpu"])[0].config
    info = card_device_info(c, Device("cuda", 0))
    assert info.total_bytes == 39 * GIB and info.capacity_basis.startswith("CUDA's total")
    del fake["devices"][2]["cuda_total"]  # a driver that does not say: NVML's, named so
    info = card_device_info(c, Device("cuda", 0))
    assert info.total_bytes == H100 and info.capacity_basis.startswith("NVML's total")


def test_a_device_without_uuid_is_found_by_pci_bus_id(fake, monkeypatch) -> None:
    class PciOnly(FakeCudaDriver):
        def ids(self, ordinal: int) -> gpu.CudaIds:
            ids = super().ids(ordinal)
            return gpu.CudaIds(ordinal, None, ids.pci_bus_id.replace("00000000:", "0000:"))

    monkeypatch.setattr(gpu, "CudaDriver", PciOnly)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu.device_for_ordinal(0).uuid() == fake["devices"][1]["uuid"]


def test_an_unknown_device_is_a_lookup_error(fake, monkeypatch) -> None:
    fake["devices"][0]["uuid"] = "GPU-ffffffff-0000-0000-0000-000000000000"
    fake["devices"][0]["pci"] = "00000000:99:00.0"

    class Stranger(FakeCudaDriver):
        def ids(self, ordinal: int) -> gpu.CudaIds:
            return gpu.CudaIds(ordinal, "GPU-12345678-0000-0000-0000-000000000000", "0000:01:00.0")

    monkeypatch.setattr(gpu, "CudaDriver", Stranger)
    with pytest.raises(gpu.GpuLookupError, match="no device with the UUID"):
        gpu.device_for_ordinal(0)


def test_a_mig_slice_is_watched_with_its_own_handle_and_capacity(fake, monkeypatch) -> None:
    """On a MIG slice the capacity is the slice's, and the processes are the slice's."""
    parent = fake["devices"][1]
    parent["mig"] = [
        {"uuid": "MIG-aaaaaaaa-0000-0000-0000-000000000001", "total": 10 * GIB, "used": 0,
         "procs": []},
        {"uuid": "MIG-aaaaaaaa-0000-0000-0000-000000000002", "total": 20 * GIB,
         "used": 3 * GIB, "procs": [{"pid": os.getpid(), "used": 3 * GIB}]}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aaaaaaaa-0000-0000-0000-000000000002")
    found = gpu.device_for_ordinal(0)
    assert found.is_mig and found.total_bytes() == 20 * GIB
    assert [p.pid for p in found.processes()] == [os.getpid()]
    facts = found.facts()
    assert facts["gpu_mig"] is True and facts["gpu_uuid"].startswith("MIG-")
    assert facts["gpu_pci_bus_id"] == parent["pci"]  # the whole GPU's
    assert facts["driver"] == "550.54.15" and facts["cuda_driver"] == "12.4"


def test_pci_bus_ids_compare_in_both_spellings() -> None:
    assert gpu.pci_key("0000:3B:00.0") == gpu.pci_key("00000000:3b:00.0") == "0000:3b:00.0"
    assert gpu.uuid_key("GPU-AB-cd") == gpu.uuid_key("MIG-abcd") == gpu.uuid_key("abcd")


def _meter(fake: dict, pids=None) -> memory.DeviceMemory:
    return memory.DeviceMemory(gpu.device_for_ordinal(0), pids or (lambda: [os.getpid()]),
                               interval_s=0.001)


def test_device_peaks_per_process_and_per_phase(fake) -> None:
    dev = fake["devices"][0]
    meter = _meter(fake)
    dev["procs"] = [{"pid": os.getpid(), "used": 500 * 2**20}]  # the CUDA context
    assert meter.current() == memory.DevicePeak(500 * 2**20, memory.PROCESS)
    meter.start()
    meter.enter("load")
    dev["procs"][0]["used"] = 14 * GIB
    time.sleep(0.02)
    dev["procs"][0]["used"] = 13 * GIB
    meter.enter("speed")
    dev["procs"][0]["used"] = 15 * GIB
    time.sleep(0.02)
    meter.enter("eval")
    dev["procs"][0]["used"] = 30 * GIB  # lm-eval's batches: not the workload's
    time.sleep(0.02)
    meter.stop()
    assert meter.peak("load").bytes == 14 * GIB
    assert meter.peak("load", "speed") == memory.DevicePeak(15 * GIB, memory.PROCESS)
    assert meter.peak("eval").bytes == 30 * GIB


def test_in_a_pid_namespace_the_device_rise_stands_in(fake) -> None:
    """NVML lists the host's PID (not ours): with nobody else on the card, the rise of the
    device's use since the start is the cell's, and the row says so."""
    dev = fake["devices"][0]
    dev["used"] = 300 * 2**20  # the driver's own, before the cell
    meter = _meter(fake)
    meter.start()
    meter.enter("load")
    dev["procs"] = [{"pid": 987654, "used": None}]  # our context, under a host PID
    dev["used"] = 300 * 2**20 + 9 * GIB
    time.sleep(0.02)
    meter.stop()
    peak = meter.peak("load")
    assert peak.bytes == 9 * GIB and peak.method == memory.DEVICE_RISE
    assert "PID namespace" in (peak.note or "")


@pytest.mark.parametrize("no_figure", [None, fake_nvml.NVML_VALUE_NOT_AVAILABLE])
def test_our_pid_listed_without_a_figure_falls_back_to_the_device_rise(fake, no_figure) -> None:
    """NVML lists the cell's own PID with usedGpuMemory N/A (pynvml's None): summing it as
    0 gave no peak and no word; the device's rise stands in, with why."""
    dev = fake["devices"][0]
    dev["used"] = 300 * 2**20
    meter = _meter(fake)
    meter.start()
    meter.enter("load")
    dev["procs"] = [{"pid": os.getpid(), "used": no_figure}]
    dev["used"] = 300 * 2**20 + 7 * GIB
    time.sleep(0.02)
    meter.stop()
    peak = meter.peak("load")
    assert peak == memory.DevicePeak(7 * GIB, memory.DEVICE_RISE, peak.note)
    assert "no memory figure" in (peak.note or "")
    # with another process on the card the rise is not the cell's: null, with the reason
    other = _meter(fake)
    other.start()
    dev["procs"].append({"pid": 4242, "used": GIB})
    time.sleep(0.02)
    other.stop()
    late = other.peak()
    assert late.bytes is None and "cannot be attributed" in (late.note or "")


def test_the_peak_bandwidth_is_the_devices_own(fake) -> None:
    """The roofline's bandwidth from the card itself, whatever its name: 2 x the maximum
    memory clock x the bus width (an H100 SXM: 2619 MHz x 5120 bits; an H100 PCIe: 1593)."""
    fake["devices"][0].update(max_clocks=[1980, 2619], bus_bits=5120)
    fake["devices"][1].update(max_clocks=[1755, 1593], bus_bits=5120)
    assert gpu.device_for_ordinal(0).facts()["gpu_peak_bandwidth_gbs"] == pytest.approx(3352.3)
    assert gpu.device_for_ordinal(1).peak_bandwidth_gbs() == pytest.approx(2039.0)
    assert gpu.device_for_ordinal(2).peak_bandwidth_gbs() is None  # NVML does not say


def test_in_a_pid_namespace_with_others_on_the_card_the_peak_is_null_with_why(fake) -> None:
    dev = fake["devices"][0]
    dev["procs"] = [{"pid": 111, "used": 2 * GIB}]  # someone else, before the cell
    dev["used"] = 2 * GIB
    meter = _meter(fake)
    assert meter.conditions() == {"gpu_others_at_start": 1,
                                  "gpu_used_at_start_bytes": 2 * GIB,
                                  "gpu_others_used_bytes": 2 * GIB}
    meter.start()
    dev["procs"].append({"pid": 987654, "used": None})
    dev["used"] = 11 * GIB
    time.sleep(0.02)
    meter.stop()
    peak = meter.peak()
    assert peak.bytes is None and peak.method is None
    assert "cannot be attributed" in (peak.note or "")


def test_the_timed_window_records_utilisation_clocks_and_sharers(fake) -> None:
    dev = fake["devices"][0]
    dev.update(util=87, clocks=[1755, 2619], procs=[{"pid": os.getpid(), "used": GIB}])
    meter = _meter(fake)
    meter.start()
    meter.open_window()
    dev["procs"].append({"pid": 4321, "used": 2 * GIB})
    time.sleep(0.05)
    window = meter.close_window()
    meter.stop()
    assert window["gpu_kernel_time_pct"] == 87 and window["gpu_sm_clock_mhz"] == 1755
    assert window["gpu_mem_clock_mhz"] == 2619
    assert window["gpu_foreign_processes"] == 1 and window["gpu_foreign_bytes"] == 2 * GIB


def test_the_allocator_cap_leaves_room_for_the_measured_context() -> None:
    """Emulating a 24 GiB class on an 80 GiB card: the allocator gets the class minus the
    context, so allocator + context (what NVML sees) stays within the class."""
    context = 537 * 2**20
    cap = allocator_cap(24 * GIB, context)
    assert cap == 24 * GIB - context and cap + context == 24 * GIB
    assert allocator_cap(24 * GIB, None) == 24 * GIB  # not measured: the whole class
    with pytest.raises(SkipCell, match="CUDA context alone"):
        allocator_cap(400 * 2**20, 537 * 2**20)


def test_no_nvml_is_a_lookup_error_not_a_crash(fake) -> None:
    fake["fail_init"] = True
    with pytest.raises(gpu.GpuLookupError, match="NVML unavailable"):
        gpu.nvml()
    assert gpu.sees_gpu() is False


def fake_env(tmp_path: Path, state: dict) -> dict[str, str]:
    """An environment whose `import pynvml` is the fake, with `state`."""
    import json

    path = tmp_path / "nvml.json"
    path.write_text(json.dumps(state))
    return {**os.environ, "FAKE_NVML": str(path),
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "fakes"), str(REPO)])}


def test_a_gpu_that_torch_cannot_use_is_refused_at_plan_time(tmp_path: Path) -> None:
    """NVML sees a GPU, torch (this CPU build) cannot use it: device=auto would silently
    measure a night of CPU cells. One line, exit 2, naming driver, torch's CUDA and the fix."""
    env = fake_env(tmp_path, THREE_GPUS)
    proc = subprocess.run([sys.executable, "-m", "bench", "model=tiny-llama", "eval=none",
                           f"results_dir={tmp_path / 'r'}", "report=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "cell.device=auto" in line and "550.54.15" in line and "12.4" in line
    assert "torch" in line and "cell.device=cpu" in line
    assert not (tmp_path / "r").exists()
    # asking for the CPU explicitly is fine
    proc = subprocess.run([sys.executable, "-m", "bench", "model=tiny-llama", "eval=none",
                           "cell.device=cpu", "dry_run=true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


class _Collect:
    """The child's Reporter, in process: what the cell measured."""

    def __init__(self) -> None:
        self.fields: dict = {}

    def measured(self, **fields: object) -> None:
        self.fields.update(fields)

    def phase(self, name: str) -> None:
        return None


def _cuda_torch(monkeypatch: pytest.MonkeyPatch, fake: dict, reserved: list[int]) -> list:
    """torch.cuda as a CUDA build behaves on one H100 (total_memory is what CUDA can
    allocate, below NVML's total), with the caching allocator's reserved bytes and cap."""
    import types

    import torch

    caps: list = []
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=H100_CUDA)
    for name, fn in {"init": lambda: None, "synchronize": lambda *a: None,
                     "get_device_properties": lambda *a: props,
                     "memory_reserved": lambda *a: reserved[0],
                     "reset_peak_memory_stats": lambda *a: None,
                     "set_per_process_memory_fraction": lambda f, *a: caps.append(f)}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    return caps


def test_the_context_is_measured_after_the_first_matmul_less_the_allocator(fake,
                                                                        monkeypatch) -> None:
    """A context measured right after torch.empty(1) misses cuBLAS's handle and the kernels
    CUDA loads on first use; the cap of an emulated class is the class less the context
    measured after a first matrix product, and the allocator's own blocks (cuBLAS's
    workspace) are not context."""
    from bench.engines.hf.engine import ENGINE as HF
    from bench.meters import CellFacts
    from bench.sweep.cell import CellRun

    dev = fake["devices"][0]
    reserved = [0]
    caps = _cuda_torch(monkeypatch, fake, reserved)

    def create(where: object) -> None:
        dev["procs"] = [{"pid": os.getpid(), "used": 500 * 2**20}]  # the bare context

    def load_kernels(where: object) -> None:
        dev["procs"][0]["used"] += 230 * 2**20  # cuBLAS, its kernels, and its workspace
        reserved[0] = 8 * 2**20  # the workspace, held by the caching allocator

    monkeypatch.setattr(type(HF), "_create_context", staticmethod(create))
    monkeypatch.setattr(type(HF), "_load_kernels", staticmethod(load_kernels))
    c = make_plan(["model=tiny-llama", "eval=none", "gpu=rtx4090-24gb", "cell.device=cpu"])[
        0].config  # planned here as a CPU cell; its device is the fake CUDA one below
    report = _Collect()
    run = CellRun(c, report)  # type: ignore[arg-type]
    run.engine = HF
    facts = CellFacts(report.measured, c, HF, Device("cuda", 0))
    capacity, facts = run._start_cuda(Device("cuda", 0), facts)
    assert facts.device_memory is not None and facts.context_bytes is not None
    facts.device_memory.stop()
    context = (500 + 230 - 8) * 2**20
    assert report.fields["context_bytes"] == context
    class_bytes = c.gpu.vram_mib * 2**20
    assert report.fields["allocator_cap_bytes"] == class_bytes - context
    assert caps == [(class_bytes - context) / H100_CUDA]
    assert capacity.bytes == class_bytes and report.fields["emulated"] is True
    assert report.fields["device_total_bytes"] == H100_CUDA  # CUDA's total, not NVML's


def test_a_peak_the_samples_missed_is_measured_and_costs_the_check_mark(fake) -> None:
    """The allocator's peak is exact: context + reserved peak above NVML's sampled peak is
    what the 10 ms samples missed, and a ✅ must clear 0.90 of the class with it."""
    from bench.report.confdata import load_conf
    from bench.report.symbols import OK, TIGHT, evidence, verdict

    assert memory.unseen_bytes(20 * GIB, GIB, 18 * GIB) == 0
    assert memory.unseen_bytes(20 * GIB, GIB, 19 * GIB + 5) == 5
    assert memory.unseen_bytes(None, GIB, GIB) is None
    rtx4090 = load_conf().gpu("rtx4090-24gb")
    assert rtx4090 is not None
    just_in = 9 * rtx4090.capacity_bytes // 10 - 2**20
    row = {"status": "ok", "device": "cuda", "peak_device_bytes": just_in,
           "device_peak_method": memory.PROCESS, "gpu_class": "local",
           "device_name": "NVIDIA H100 80GB HBM3"}
    assert verdict(evidence([row], load_conf()), rtx4090) == OK
    row["peak_device_unseen_bytes"] = 2**20 + 1
    assert verdict(evidence([row], load_conf()), rtx4090) == TIGHT


def test_the_cell_builds_every_meter_module_from_what_it_knows(fake) -> None:
    """The meters are a list the cell builds, in rank order: a CPU cell gets no
    device-memory meter; a CUDA cell with NVML gets it, and an energy meter on the GPU's
    counter."""
    from bench.engines.hf.engine import ENGINE as HF
    from bench.meters import CellFacts, build_meters

    c = make_plan(["model=tiny-llama", "eval=none", "cell.device=cpu"])[0].config
    fields: dict = {}
    cpu = build_meters(CellFacts(fields.update, c, HF, Device("cpu")))
    assert [type(m).__name__ for m in cpu] == ["HostMemoryMeter", "ConditionsMeter",
                                                "EnergyMeter", "DiskReadMeter"]
    poller = memory.DeviceMemory(gpu.device_for_ordinal(0), lambda: [os.getpid()])
    fake["devices"][0]["energy_mj"] = 1000
    cuda = build_meters(CellFacts(fields.update, c, HF, Device("cuda", 0),
                                  gpu.device_for_ordinal(0), poller, 500 * 2**20))
    assert [type(m).__name__ for m in cuda] == ["HostMemoryMeter", "ConditionsMeter",
                                                 "DeviceMemoryMeter", "EnergyMeter",
                                                 "DiskReadMeter"]
