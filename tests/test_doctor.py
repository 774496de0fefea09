"""`python -m bench.ops.doctor`: one line per check here (CPU facts, exit 0), and a problem named
with its fix in a fake broken environment (fake NVML: a GPU this CPU torch cannot use)."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

from bench.ops import nightly
from tests.conftest import REPO
from tests.test_gpu import THREE_GPUS, fake_env

LEVELS = ("ok", "warning", "problem")


def doctor(tmp_path: Path, env: dict[str, str] | None = None,
           *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.ops.doctor",
                           f"results_dir={tmp_path / 'results'}",
                           f"cache_dir={tmp_path / 'cache'}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_on_this_machine_it_reports_the_cpu_and_exits_0(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = doctor(tmp_path)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert all(line.split()[0] in LEVELS for line in lines), lines
    names = [line.split()[1] for line in lines]
    for name in ("python", "gpu", "torch", "cpu", "bitsandbytes", "llama.cpp", "vllm",
                 "sandbox", "disk-results", "disk-cache", "packaged"):
        assert name in names, names
    assert "no NVIDIA GPU" in proc.stdout and "cores" in proc.stdout
    assert not any(line.startswith("problem") for line in lines)
    assert took < 30, took


def test_a_gpu_this_torch_cannot_use_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    state = copy.deepcopy(THREE_GPUS)
    state["devices"][1]["procs"] = [{"pid": 4242, "used": 10 * 2**30}]
    state["devices"][1]["used"] = 10 * 2**30
    proc = doctor(tmp_path, fake_env(tmp_path, state))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    (torch,) = [line for line in lines if line.split()[1] == "torch"]
    assert torch.startswith("problem") and "CPU build" in torch and "fix:" in torch
    assert any(line.startswith("ok") and "NVML sees 3 GPU(s)" in line and "550.54.15" in line
               for line in lines)
    busy = [line for line in lines if line.split()[1] == "gpu-idle"]
    assert len(busy) == 3 and sum(line.startswith("warning") for line in busy) == 1
    assert "1 process(es), 10.0 GiB" in proc.stdout


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    proc = doctor(tmp_path, None, "bogus=1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bogus=1" in proc.stderr and "results_dir" in proc.stderr


def test_the_nightly_refuses_a_busy_gpu(tmp_path: Path, monkeypatch) -> None:
    """The night is refused in one line before any sweep: figures on a GPU others use would
    be shared. (Here NVML is the fake, and torch cannot use it: a problem refuses first.)"""
    from bench.ops import doctor as doctor_module

    busy = doctor_module.Check("gpu-idle", "warning", "gpu GPU-0000000 in use: 1 process(es)")
    monkeypatch.setattr(doctor_module, "checks", lambda results, cache: [busy])
    args = nightly.parse_args(["--results-dir", str(tmp_path / "r"),
                               "--state-dir", str(tmp_path / "s")])
    assert "in use: 1 process(es)" in (nightly.machine_refusal(args) or "")
    args.allow_busy_gpu = True
    assert nightly.machine_refusal(args) is None
    problem = doctor_module.Check("torch", "problem", "torch is a CPU build", "install CUDA")
    monkeypatch.setattr(doctor_module, "checks", lambda results, cache: [busy, problem])
    assert "torch is a CPU build" in (nightly.machine_refusal(args) or "")
    code = nightly.main(["--results-dir", str(tmp_path / "r"), "--state-dir",
                         str(tmp_path / "s"), "--reports-dir", str(tmp_path / "rep")])
    assert code == 2 and not (tmp_path / "s" / nightly.CURRENT_RUN).exists()


def _bnb_names() -> tuple[set[str], set[str]]:
    """What bitsandbytes itself can set BNB_BACKEND to, and its native library classes, read
    from its installed source (not values this test invents)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("bitsandbytes.cextension")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    backends = {node.value.value for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and any(isinstance(t, ast.Name) and t.id == "BNB_BACKEND" for t in node.targets)}
    libraries = {node.name for node in ast.walk(tree)
                 if isinstance(node, ast.ClassDef) and node.name.endswith("NativeLibrary")}
    return backends, libraries


def test_a_cuda_bitsandbytes_on_a_gpu_box_is_no_problem_and_a_cpu_one_is() -> None:
    """bitsandbytes says "CUDA" (not "cuda"): the doctor compared with the lower case and so
    refused every GPU machine, and the nightly every GPU night."""
    from bench.ops import doctor as doctor_module

    backends, libraries = _bnb_names()
    assert backends == {"CPU", "ROCm", "CUDA", "XPU"}, backends
    assert {"CudaBNBNativeLibrary", doctor_module.BNB_MOCK_LIBRARY} <= libraries
    cuda = {"bitsandbytes": {"version": "0.50.2", "backend": "CUDA",
                             "library": "CudaBNBNativeLibrary"}}
    assert doctor_module._bnb_check(cuda, gpus=1).level == "ok"
    for other in backends - {"CUDA"}:
        probe = {"bitsandbytes": {**cuda["bitsandbytes"], "backend": other}}
        check = doctor_module._bnb_check(probe, gpus=1)
        assert check.level == "problem" and "no CUDA library" in check.text, other
    cpu = {"bitsandbytes": {**cuda["bitsandbytes"], "backend": "CPU",
                            "library": "BNBNativeLibrary"}}
    assert doctor_module._bnb_check(cpu, gpus=0).level == "ok"  # no GPU: the CPU one is right
    mock = {"bitsandbytes": {**cuda["bitsandbytes"], "library": doctor_module.BNB_MOCK_LIBRARY}}
    assert doctor_module._bnb_check(mock, gpus=1).level == "problem"


def test_a_healthy_gpu_box_has_no_problem_and_the_nightly_takes_it(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The whole doctor on a GPU box whose stack is right (NVML the fake, torch's and
    bitsandbytes' answers as the probe gives them on CUDA): no problem, so the nightly runs."""
    from bench.core import gpu, toolchain
    from bench.ops import doctor as doctor_module
    from tests.fakes import pynvml as fake_nvml
    from tests.fakes.cuda import FakeCudaDriver

    state = copy.deepcopy(THREE_GPUS)
    state["devices"] = state["devices"][:1]
    monkeypatch.setattr(fake_nvml, "STATE", state)
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    monkeypatch.setattr(gpu, "CudaDriver", FakeCudaDriver)
    probe = {"torch": {"version": "2.11.0+cu130", "cuda": "13.0", "available": True,
                       "count": 1, "warning": None, "nvml_lists_pid": True},
             "bitsandbytes": {"version": "0.50.2", "backend": "CUDA",
                              "library": "CudaBNBNativeLibrary"},
             "llama_cpp": {"version": "0.3.36", "gpu": True}}
    monkeypatch.setattr(toolchain, "probe", lambda *flags: probe)
    found = doctor_module.checks(tmp_path / "results", tmp_path / "cache")
    assert not [c.line() for c in found if c.level == "problem"]
    args = nightly.parse_args(["--results-dir", str(tmp_path / "r"),
                               "--state-dir", str(tmp_path / "s")])
    assert nightly.machine_refusal(args) is None
    probe["bitsandbytes"]["backend"] = "CPU"  # a bitsandbytes that cannot use the GPU
    found = doctor_module.checks(tmp_path / "results", tmp_path / "cache")
    assert [c.name for c in found if c.level == "problem"] == ["bitsandbytes"]
    assert "no CUDA library" in (nightly.machine_refusal(args) or "")
