"""Whether the installed stack can use the GPU the driver shows: torch's CUDA build against
the driver, llama.cpp's build, bitsandbytes' library.

A GPU that NVML sees but torch cannot use is the quietest way to lose a night: with
cell.device=auto every transformers cell falls back to the CPU, runs for hours and reports
CPU figures. The plan refuses it in one line before any work; `python -m bench.ops.doctor`
shows the same facts. The probe runs in a child process (importing torch in the parent
would cost every plan seconds), and only when NVML sees a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Optional

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

_PROBE = r"""
import json, os, sys, warnings
out = {}
try:
    import torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                    "available": available,
                    "count": torch.cuda.device_count() if available else 0,
                    "warning": " ".join(str(w.message).split())[:300] if caught else None}
    if available and "--context" in sys.argv:  # does NVML list this process once it has one?
        torch.empty(1, device="cuda")
        import pynvml
        pynvml.nvmlInit()
        pids = set()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            pids |= {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        out["torch"]["nvml_lists_pid"] = os.getpid() in pids
except Exception as exc:
    out["torch"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
if "--bnb" in sys.argv:
    try:
        import logging
        logging.disable(logging.WARNING)
        import bitsandbytes as bnb
        from bitsandbytes import cextension
        lib = getattr(cextension, "lib", None)
        out["bitsandbytes"] = {"version": bnb.__version__,
                               "backend": getattr(cextension, "BNB_BACKEND", None),
                               "library": type(lib).__name__ if lib is not None else None}
    except Exception as exc:
        out["bitsandbytes"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
try:
    import llama_cpp
    out["llama_cpp"] = {"version": llama_cpp.__version__,
                        "gpu": bool(llama_cpp.llama_supports_gpu_offload())}
except Exception as exc:
    out["llama_cpp"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Driver:
    """What NVML says: the GPUs, the driver and the newest CUDA it supports."""

    gpus: int
    version: Optional[str]
    cuda: Optional[str]

    def describe(self) -> str:
        return (f"NVML sees {self.gpus} GPU(s) (driver {self.version}, CUDA "
                f"{self.cuda or 'unknown'})")


def driver() -> Driver:
    """The driver's facts; no GPU (or no NVML) is Driver(0, None, None)."""
    from bench.core.gpu import GpuLookupError, cuda_driver_version, driver_version, nvml

    try:
        lib = nvml()
        return Driver(int(lib.nvmlDeviceGetCount()), driver_version(lib),
                      cuda_driver_version(lib))
    except GpuLookupError:
        return Driver(0, None, None)


@lru_cache(maxsize=4)
def probe(*flags: str) -> dict[str, Any]:
    """torch's and llama-cpp-python's view of CUDA, from a child process of this Python;
    `--context`: also whether NVML lists the child once it has a CUDA context; `--bnb`:
    bitsandbytes' native library."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, *flags], capture_output=True,
                              text=True, timeout=180)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _version_tuple(text: Optional[str]) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return ()


def torch_problem(drv: Driver, torch: dict[str, Any]) -> Optional[str]:
    """Why torch cannot use the GPU the driver shows (None: it can), with the fix."""
    if torch.get("available"):
        return None
    if "error" in torch:
        return f"torch does not import ({torch['error']})"
    version, cuda = torch.get("version"), torch.get("cuda")
    if cuda is None:
        return (f"torch {version} is a CPU build (torch.version.cuda is None): install a "
                f"CUDA build (make install TORCH_SPEC=\"torch==<version>\" pulls PyPI's CUDA "
                f"wheel on a GPU box)")
    if drv.cuda and _version_tuple(cuda) > _version_tuple(drv.cuda):
        return (f"torch {version} is built for CUDA {cuda}, newer than the CUDA {drv.cuda} "
                f"driver {drv.version} supports: install a torch built for CUDA <= {drv.cuda} "
                f"(its cuXXX wheel index) or update the driver")
    why = torch.get("warning") or "torch.cuda.is_available() is False"
    return f"torch {version} (CUDA {cuda}) cannot use it: {why}"


def llama_cpp_problem(llama: dict[str, Any]) -> Optional[str]:
    """Why llama.cpp cannot use the GPU (None: it can)."""
    if llama.get("gpu"):
        return None
    if "error" in llama:
        return f"llama-cpp-python does not import ({llama['error']})"
    return (f"llama-cpp-python {llama.get('version')} was built without GPU offload: "
            f"make install LLAMACPP_CMAKE_ARGS=\"-DGGML_CUDA=on\"")


def cuda_refusal(configs: Iterable["BenchConfig"]) -> Optional[str]:
    """One line when cells that would run on the GPU cannot (the stack cannot use the GPU
    the driver shows), naming the driver, the library, the fix; None when they can."""
    wanted = {}
    for cfg in configs:
        runtime = cfg.engine.gpu_runtime()
        if cfg.cell.device != "cpu" and runtime is not None:
            wanted.setdefault(runtime, cfg.cell.device)
    if not wanted:
        return None
    drv = driver()
    if drv.gpus == 0:
        return None  # no GPU: auto means the CPU; cell.device=cuda cells are skipped rows
    found = probe()
    problems = {"torch": torch_problem(drv, found.get("torch", {})),
                "llama_cpp": llama_cpp_problem(found.get("llama_cpp", {}))}
    for runtime, device in wanted.items():
        if problems[runtime] is not None:
            return (f"cell.device={device}: {drv.describe()} but {problems[runtime]}; or set "
                    f"cell.device=cpu to measure on the CPU on purpose")
    return None
