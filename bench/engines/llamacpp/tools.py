"""llama.cpp's own programs (llama-server, llama-perplexity, llama-bench), built from the
very llama.cpp the engine runs: the sources llama-cpp-python's sdist vendors, for the
installed version.

Built once, on first use, into <cache>/llama.cpp/<version>-<digest>/bin (never in `make
run`; BENCH_LLAMACPP_TOOLS names another root, shared by caches): minutes on a few cores.
Offline the build needs LLAMA_CURL=OFF and LLAMA_USE_PREBUILT_UI=OFF (no download at build
or run time). With a CUDA compiler and a visible GPU it adds GGML_CUDA=ON, as a GPU user's
llama.cpp has it; BENCH_LLAMACPP_CMAKE_ARGS replaces that choice. build.json beside the
programs records the version, the sdist's sha256 (what identifies the sources), the CMake
arguments and the build's seconds; the digest in the path keys the arguments, so another
choice is another build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Optional, Sequence

from bench.core.atomic import staged_dir
from bench.core.errors import SkipCell
from bench.core.paths import under

TOOLS = ("llama-server", "llama-perplexity", "llama-bench")
OFFLINE_ARGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF")
ARGS_ENV = "BENCH_LLAMACPP_CMAKE_ARGS"
ROOT_ENV = "BENCH_LLAMACPP_TOOLS"
BUILD_RECORD = "build.json"


def llama_cpp_version() -> str:
    from bench.engines.llamacpp.files import llama_cpp_version as installed

    version = installed()
    if version == "not installed":
        raise SkipCell("llama.cpp's programs are built from llama-cpp-python's sources: "
                       "install it (make install)")
    return version


def _gpu_build() -> bool:
    """A CUDA compiler and a visible NVIDIA GPU: build what a GPU user runs."""
    if shutil.which("nvcc") is None:
        return False
    from bench.engines.base import nvml_sees_cuda

    return nvml_sees_cuda()


def cmake_args() -> list[str]:
    """The build's feature arguments (BENCH_LLAMACPP_CMAKE_ARGS, else CUDA where it can)."""
    chosen = os.environ.get(ARGS_ENV)
    if chosen is not None:
        return shlex.split(chosen)
    return ["-DGGML_CUDA=ON"] if _gpu_build() else []


def build_dir(cache_dir: str) -> Path:
    """Where the programs of this llama.cpp and these arguments live."""
    key = json.dumps({"version": llama_cpp_version(), "args": cmake_args()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = os.environ.get(ROOT_ENV)
    if root:
        return under(root, f"{llama_cpp_version()}-{digest}")
    return under(cache_dir, "llama.cpp", f"{llama_cpp_version()}-{digest}")


def built(cache_dir: str, name: str) -> Optional[Path]:
    """The program if it is built (finding it builds nothing)."""
    path = build_dir(cache_dir) / "bin" / name
    return path if path.is_file() and (path.parent.parent / BUILD_RECORD).is_file() else None


def build_record(cache_dir: str) -> dict[str, object]:
    """What the build was made from (for rows and the peers benchmark)."""
    path = build_dir(cache_dir) / BUILD_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def ensure_tool(cache_dir: str, name: str, log: Optional[Path] = None) -> Path:
    """The program, built with the others on first use (minutes; logged to `log`)."""
    if name not in TOOLS:
        raise ValueError(f"{name} is not one of {', '.join(TOOLS)}")
    found = built(cache_dir, name)
    if found is not None:
        return found
    target = build_dir(cache_dir)
    with staged_dir(target, BUILD_RECORD) as work:
        _build(work, log or (target.parent / f"{target.name}.build.log"))
    path = built(cache_dir, name)
    assert path is not None
    return path


def _sdist(work: Path) -> Path:
    """llama-cpp-python's sdist of the installed version (pip: its index or its cache)."""
    version = llama_cpp_version()
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                           "--no-binary", ":all:", "-d", str(work),
                           f"llama-cpp-python=={version}"], capture_output=True, text=True)
    found = sorted(work.glob(f"llama_cpp_python-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        raise RuntimeError(f"pip could not fetch llama-cpp-python {version}'s sources: "
                           f"{(done.stderr or done.stdout).strip()[-300:]}")
    return found[0]


def _vendored(sdist: Path, into: Path) -> Path:
    """vendor/llama.cpp of the sdist, extracted under `into`."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        tar.extractall(into, members=members, filter="data")
    found = sorted(into.glob("*/vendor/llama.cpp/CMakeLists.txt"))
    if not found:
        raise RuntimeError(f"{sdist.name} vendors no llama.cpp")
    return found[0].parent


def _run(command: Sequence[str], log: Path) -> None:
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(command)}\n")
        fh.flush()
        done = subprocess.run(list(command), stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
        raise RuntimeError(f"building llama.cpp's programs failed ({command[0]} exit "
                           f"{done.returncode}; log {log}): " + " | ".join(tail))


def toolchain_problem() -> Optional[str]:
    """Why this machine cannot build the programs (no CMake or no C++ compiler), or None."""
    missing = [name for name, found in (("cmake", shutil.which("cmake")),
                                        ("a C++ compiler", shutil.which("c++")
                                         or shutil.which("g++") or shutil.which("clang++")))
               if not found]
    if missing:
        return (f"building llama.cpp's programs needs {' and '.join(missing)} on PATH "
                f"(apt install cmake g++)")
    return None


def _build(work: Path, log: Path) -> None:
    """Fetch, configure, compile the programs and copy them to `work`/bin."""
    problem = toolchain_problem()
    if problem:
        raise SkipCell(problem)
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("", encoding="utf-8")
    sdist = _sdist(work / "src")
    source = _vendored(sdist, work / "src")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    args = [*OFFLINE_ARGS, *cmake_args()]
    _run(["cmake", "-S", str(source), "-B", str(work / "build"), *generator, *args], log)
    _run(["cmake", "--build", str(work / "build"), "--target", *TOOLS,
          "-j", str(os.cpu_count() or 1)], log)
    (work / "bin").mkdir()
    for name in TOOLS:
        shutil.copy2(next((work / "build" / "bin").glob(name)), work / "bin" / name)
    version = subprocess.run([str(work / "bin" / "llama-server"), "--version"],
                             capture_output=True, text=True, timeout=60)
    record = {"llama_cpp_python": llama_cpp_version(),
              "sdist_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest(),
              "cmake_args": args, "build_s": round(time.perf_counter() - start, 1),
              "version": (version.stdout + version.stderr).strip()[-300:],
              "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    shutil.rmtree(work / "src", ignore_errors=True)
    shutil.rmtree(work / "build", ignore_errors=True)
    (work / BUILD_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
