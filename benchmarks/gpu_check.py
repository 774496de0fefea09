"""`make gpu-check`: bench's CUDA paths, proved on one GPU machine in one call of at most 10
minutes, with no network (benchmarks/gpu_check.sh installs what the image lacks from .whl/,
then runs this).

    python -m benchmarks.gpu_check --out DIR [--dry-run] [--limit-s S]

The cells are data (INVOCATIONS), in the order of what only they prove: a cell that proves
something no other does comes before one that adds a cross-check, so a short budget skips
the least. Cells that differ in one setting share one `python -m bench` invocation (one
Hydra compose, one plan, one CUDA probe; each cell still in its own child process). Before
it starts, an invocation must fit the time left (its estimate, below); it runs under a
deadline, after which it gets SIGTERM (its running cell then leaves a `timeout` row) and,
20 s later, SIGKILL. `--dry-run` plans every invocation here (`dry_run=true`, nothing loads),
prints each cell's estimate and the total, and exits 1 when an invocation does not plan,
plans other cells than its table says, or the total does not fit the budget.

Files in DIR (at most 8): env.txt (nvidia-smi, the doctor, torch and NVML, the stack's
versions), smi_apps.csv and smi_gpu.csv (nvidia-smi every 100 ms, independent of bench),
cells.log, rows.csv and summary.md (benchmarks/gpu_check_summary.py), logs.tgz (every
cell's log and the report).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional, Sequence

from bench.engines.base import WEIGHTS_SHARE

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 480.0  # the cells' budget: the call's 10 minutes less install, env and summary
KILL_GRACE_S = 20.0  # SIGTERM (the running cell writes its row) -> SIGKILL

# Llama-2-7B's true architecture with random weights (nothing downloaded), 512-token prompts
BASE = ("weights=synthetic", "eval=none", "report=false", "workload.prompt_tokens=512",
        "workload.max_warmup_runs=2", "workload.repeats=3", "workload.min_duration_s=2",
        "workload.max_repeats=4")
LLAMA = "llama2-7b"

# --- what a cell costs, estimated --------------------------------------------------------
# Fixed costs. Measured on the 2-core CPU machine (2026-12-07): a dry run 1.3 s, importing
# torch and transformers 2.5 s, a whole tiny CPU cell 9.4 s end to end; the GPU image's CUDA
# torch loads its CUDA libraries on top (estimated).
INVOCATION_S = 10.0  # python, Hydra's compose, the plan and its CUDA probe (a torch child)
CELL_START_S = 12.0  # the measuring child: spawn, imports, CUDA context and cuBLAS, NVML
ENERGY_S = 3.0  # the energy meter on NVML's counter: an idle second and >= 1 s of prefills
# Decode at batch 1 through transformers' eager generate is bound by kernel launches, not
# by HBM (Llama-2-7B fp16 decodes at tens of tokens per second on an A100 or H100 against a
# roofline of hundreds); per layer and token, by scheme (estimated; bitsandbytes' kernels
# dequantize on every call, LLM.int8 most slowly).
DECODE_LAYER_S = {"fp16": 0.0008, "bnb-nf4": 0.002, "bnb-int8": 0.006}
HOST_RANDOM_GBS = 0.29  # torch's seeded normal_ on the CPU, one thread (measured here)
PAGEABLE_H2D_GBS = 10.0  # offloaded layers copied from pageable host memory (estimated)
SD_CALL_S = 1.2  # SD 1.5 at 512², 20 steps with guidance, fp16, on an H100 (estimated)
MIN_CALLS = 2 + 3  # warm-up calls (at most 2) + timed repeats (at least 3)


@dataclass(frozen=True)
class CheckCell:
    """One cell of the check: the row it leaves is found by `match` (row fields)."""

    name: str
    proves: str
    match: tuple[tuple[str, object], ...]
    kind: str = "decode"  # decode | oom | offload | image
    quant: str = "fp16"
    gpu: str = "local"
    new_tokens: int = 128

    def finds(self, row: dict) -> bool:
        return all(row.get(k) == v for k, v in self.match)

    def estimate_s(self) -> float:
        """Seconds from the child's start to its row (the task's timed calls, bench's
        meters), by the constants above."""
        if self.kind == "image":
            return CELL_START_S + ENERGY_S + 3.0 + MIN_CALLS * SD_CALL_S
        arch = _arch(LLAMA)
        weights_gb = arch.params * 2 / 1e9
        if self.kind == "oom":  # its weights fill the class, then the allocator refuses
            return CELL_START_S + 3.0
        token_s = arch.num_hidden_layers * DECODE_LAYER_S[self.quant]
        build_s = 3.0
        if self.kind == "offload":  # what does not fit the class is drawn and kept on the host
            host_gb = max(0.0, weights_gb - WEIGHTS_SHARE * _capacity(self.gpu) / 1e9)
            build_s += host_gb / HOST_RANDOM_GBS
            token_s += host_gb / PAGEABLE_H2D_GBS
        call_s = (self.new_tokens + 1) * token_s
        return CELL_START_S + ENERGY_S + build_s + MIN_CALLS * call_s + 2 * token_s


@dataclass(frozen=True)
class Invocation:
    """One `python -m bench` run: its overrides and the cells it plans, in its order."""

    name: str
    args: tuple[str, ...]
    cells: tuple[CheckCell, ...]
    namespace: bool = False  # in a PID namespace of its own (`unshare -p -f`)

    def estimate_s(self) -> float:
        return INVOCATION_S + sum(c.estimate_s() for c in self.cells)

    def cell_timeout_s(self) -> float:
        """Each cell's own cap (cell.timeout_s): twice its estimate, at least 90 s."""
        return max(90.0, 2 * max(c.estimate_s() for c in self.cells))


def _cell(name: str, proves: str, run_id: str, quant: str = "fp16", gpu: str = "local",
          offload: bool = False, model: str = LLAMA, **kind: object) -> CheckCell:
    match = (("run_id", run_id), ("model", model), ("quant", quant), ("gpu_class", gpu),
             ("offload", offload))
    return CheckCell(name, proves, match, quant=quant, gpu=gpu, **kind)  # type: ignore[arg-type]


RID = "gpucheck"
INVOCATIONS: tuple[Invocation, ...] = (
    Invocation("fp16", (f"run_id={RID}", f"model={LLAMA}", "quant=fp16",
                        "gpu=local,rtx3060-12gb,rtx4090-24gb", "workload.new_tokens=128"), (
        _cell("a-fp16", "peak vs nvidia-smi, weights bytes, decode below the roofline", RID),
        _cell("d-12gb", "the capped allocator under an emulated 12 GB class: oom", RID,
              gpu="rtx3060-12gb", kind="oom"),
        _cell("c-24gb", "an emulated 24 GB class: fits (cap = class - context)", RID,
              gpu="rtx4090-24gb"))),
    Invocation("pidns", (f"run_id={RID}-pidns", f"model={LLAMA}", "quant=fp16", "gpu=local",
                         "workload.new_tokens=64"), (
        _cell("h-pidns", "its own PID namespace: the device-rise fallback, for real",
              f"{RID}-pidns", new_tokens=64),), namespace=True),
    Invocation("bnb", (f"run_id={RID}", f"model={LLAMA}", "quant=bnb-nf4,bnb-int8",
                       "gpu=local", "workload.new_tokens=32"), (
        _cell("f-nf4", "bitsandbytes 4-bit on CUDA, synthetic weights made on the GPU", RID,
              quant="bnb-nf4", new_tokens=32),
        _cell("g-int8", "bitsandbytes LLM.int8 on CUDA", RID, quant="bnb-int8",
              new_tokens=32))),
    Invocation("sd", (f"run_id={RID}-sd", "model=sd-1.5", "quant=fp16", "gpu=local,laptop-8gb",
                      "workload.steps=20"), (
        _cell("i-sd15", "diffusers on CUDA: SD 1.5 fp16 at 512x512, per-step, encoder and "
              "VAE times, a peak per component", f"{RID}-sd", model="sd-1.5", kind="image"),
        _cell("j-sd15-8gb", "SD 1.5 under an emulated 8 GB class", f"{RID}-sd",
              model="sd-1.5", gpu="laptop-8gb", kind="image"))),
    Invocation("sync", (f"run_id={RID}-sync", f"model={LLAMA}", "quant=fp16", "gpu=local",
                        "workload.new_tokens=128", "workload.cuda_clock=sync"), (
        _cell("b-sync", "the CUDA-event clock against a synchronize at every token",
              f"{RID}-sync"),)),
    Invocation("offload", (f"run_id={RID}", f"model={LLAMA}", "quant=fp16",
                           "gpu=rtx3060-12gb", "offload=true", "workload.new_tokens=16"), (
        _cell("e-offload", "offload under the 12 GB class: fits, peak <= class", RID,
              gpu="rtx3060-12gb", offload=True, kind="offload", new_tokens=16),)),
)
CELLS: tuple[CheckCell, ...] = tuple(c for inv in INVOCATIONS for c in inv.cells)


def _arch(model: str):  # -> bench.core.config.ArchFacts
    from bench.report.confdata import load_conf

    return load_conf().models[model]


def _capacity(gpu: str) -> int:
    from bench.report.confdata import load_conf

    found = load_conf().gpu(gpu)
    assert found is not None, gpu
    return found.capacity_bytes


# --- running ---------------------------------------------------------------------------


@dataclass
class Check:
    """One call of the check: where its files go and how much time is left."""

    out: Path
    work: Path
    limit_s: float
    python: str = sys.executable
    t0: float = field(default_factory=time.monotonic)

    @property
    def results(self) -> Path:
        return self.work / "results"

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stamp(self, log: IO[str], text: str) -> None:
        line = f"== {self.elapsed():.0f}s {text}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    def bench_args(self, inv: Invocation, dry_run: bool = False) -> list[str]:
        where = self.work / "outputs" / inv.name
        return [*BASE, *inv.args, f"results_dir={self.results}",
                f"cell.timeout_s={inv.cell_timeout_s():.0f}",
                f"hydra.run.dir={where}", f"hydra.sweep.dir={where}",
                *(["dry_run=true"] if dry_run else [])]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}


def _pid_namespaces() -> Optional[str]:
    """None where `unshare -p -f` works here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare (util-linux) on this machine"
    done = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -p refused: {done.stderr.strip()}"


def _stop(proc: subprocess.Popen, namespace: bool) -> None:
    """SIGTERM to bench (inside a namespace: to bench, not to unshare, which ignores it), so
    its running cell writes its row; SIGKILL after the grace."""
    import psutil

    target = proc.pid
    if namespace:
        children = psutil.Process(proc.pid).children()
        target = children[0].pid if children else proc.pid
    try:
        os.kill(target, signal.SIGTERM)
        proc.wait(KILL_GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def run_invocation(check: Check, inv: Invocation, log: IO[str], deadline_s: float) -> int:
    """One invocation, its output into the log; its exit status (-15: stopped at its
    deadline)."""
    cmd = [check.python, "-m", "bench", *check.bench_args(inv)]
    if inv.namespace:
        cmd = ["unshare", "-p", "-f", "--mount-proc", *cmd]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        return proc.wait(deadline_s)
    except subprocess.TimeoutExpired:
        check.stamp(log, f"{inv.name}: past its {deadline_s:.0f} s, stopped (SIGTERM)")
        _stop(proc, inv.namespace)
        return -signal.SIGTERM


def run_cells(check: Check, log: IO[str]) -> None:
    """Every invocation that fits the time left, in order."""
    namespaces = _pid_namespaces()
    for inv in INVOCATIONS:
        names = ", ".join(c.name for c in inv.cells)
        left = check.limit_s - check.elapsed()
        if inv.estimate_s() > left:
            check.stamp(log, f"SKIP (time) {names}: estimated {inv.estimate_s():.0f} s, "
                        f"{left:.0f} s left")
            continue
        if inv.namespace and namespaces is not None:
            check.stamp(log, f"SKIP {names}: {namespaces}")
            continue
        for cell in inv.cells:
            check.stamp(log, f"cell {cell.name}: {cell.proves} (estimated "
                        f"{cell.estimate_s():.0f} s)")
        start = time.monotonic()
        code = run_invocation(check, inv, log, left)
        check.stamp(log, f"{names} rc={code} in {time.monotonic() - start:.0f} s (estimated "
                    f"{inv.estimate_s():.0f} s)")


def _capture(cmd: Sequence[str], out: IO[str], timeout: float = 120) -> None:
    out.write(f"$ {' '.join(cmd)}\n")
    out.flush()
    try:
        subprocess.run(list(cmd), cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                       timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        out.write(f"(failed: {exc})\n")


_PROBE = """
import os, torch, pynvml
p = torch.cuda.get_device_properties(0); torch.empty(1, device="cuda")
free, total = torch.cuda.mem_get_info(0)
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
print("torch", torch.__version__, torch.version.cuda, p.name, "total_memory", p.total_memory,
      "mem_get_info total", total, "uuid", p.uuid)
print("nvml total", pynvml.nvmlDeviceGetMemoryInfo(h).total, "uuid", pynvml.nvmlDeviceGetUUID(h),
      "pid", os.getpid(), "nvml pids",
      [(q.pid, q.usedGpuMemory) for q in pynvml.nvmlDeviceGetComputeRunningProcesses(h)])
"""


def write_env(check: Check) -> None:
    with open(check.out / "env.txt", "w") as out:
        _capture(["nvidia-smi"], out)
        _capture(["nvidia-smi", "-q", "-d", "MEMORY,CLOCK,POWER,COMPUTE"], out)
        _capture([check.python, "-m", "bench.ops.doctor", f"results_dir={check.results}",
                  f"cache_dir={check.work / 'cache'}"], out)
        _capture([check.python, "-c", _PROBE], out)
        _capture([check.python, "-m", "pip", "list", "--format=freeze"], out)


def smi_pollers(check: Check) -> list[subprocess.Popen]:
    """nvidia-smi every 100 ms into two CSV files: a view of the same windows bench's own
    meters do not produce."""
    if shutil.which("nvidia-smi") is None:
        return []
    queries = (("smi_apps.csv", "--query-compute-apps=timestamp,pid,used_memory"),
               ("smi_gpu.csv", "--query-gpu=timestamp,memory.used,utilization.gpu,clocks.sm,"
                               "power.draw"))
    return [subprocess.Popen(["nvidia-smi", query, "--format=csv,noheader", "-lms", "100"],
                             stdout=open(check.out / name, "w"), stderr=subprocess.DEVNULL)
            for name, query in queries]


def run(check: Check) -> int:
    with open(check.out / "cells.log", "w") as log:
        check.stamp(log, "env")
        write_env(check)
        pollers = smi_pollers(check)
        try:
            run_cells(check, log)
        finally:
            for poller in pollers:
                poller.terminate()
        check.stamp(log, "summary")
        with open(check.out / "summary.md", "w") as summary:
            subprocess.run([check.python, str(REPO / "benchmarks" / "gpu_check_summary.py"),
                            str(check.results), str(check.out)], cwd=REPO, env=_env(),
                           stdout=summary, stderr=subprocess.STDOUT, timeout=300)
        _capture([check.python, "-m", "bench.report", f"results_dir={check.results}",
                  f"reports_dir={check.work / 'report'}"], log, timeout=300)
        with tarfile.open(check.out / "logs.tgz", "w:gz") as tar:
            for name in ("outputs", "report"):
                if (check.work / name).exists():
                    tar.add(check.work / name, arcname=name)
        check.stamp(log, "done")
    print((check.out / "summary.md").read_text())
    return 0


def dry_run(check: Check) -> int:
    """Plan every invocation here; each cell's line with its estimate; 1 on any failure."""
    failed = 0
    with open(check.out / "cells.log", "w") as log:
        for inv in INVOCATIONS:
            done = subprocess.run([check.python, "-m", "bench", *check.bench_args(inv, True)],
                                  cwd=REPO, env=_env(), capture_output=True, text=True,
                                  timeout=300)
            planned = [line for line in done.stdout.splitlines() if line[:5].strip().isdigit()]
            ok = done.returncode == 0 and len(planned) == len(inv.cells)
            failed += not ok
            lines = (planned + [""] * len(inv.cells))[:len(inv.cells)]
            for cell, line in zip(inv.cells, lines, strict=True):
                text = (f"== {cell.name}: {cell.proves}\n   {line.strip() or 'NOT PLANNED'}\n"
                        f"   estimated {cell.estimate_s():.0f} s")
                print(text)
                log.write(text + "\n")
            if not ok:
                why = (done.stderr.strip().splitlines() or [f"planned {len(planned)} cells, "
                                                           f"the table has {len(inv.cells)}"])
                print(f"   FAILED to plan {inv.name}: {why[-1]}")
                log.write(f"   FAILED to plan {inv.name}: {why[-1]}\n")
        total = sum(inv.estimate_s() for inv in INVOCATIONS)
        line = (f"== total: {len(CELLS)} cells in {len(INVOCATIONS)} invocations, estimated "
                f"{total:.0f} s ({total / 60:.1f} min) against a budget of {check.limit_s:.0f} s")
        print(line)
        log.write(line + "\n")
    if total > check.limit_s:
        print("   the estimate does not fit the budget")
        return 1
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-check-out", help="where the files go")
    parser.add_argument("--dry-run", action="store_true", help="plan here, load nothing")
    parser.add_argument("--limit-s", type=float, default=LIMIT_S, help="the cells' budget")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-check."))
    os.environ["BENCH_CACHE"] = str(work / "cache")
    check = Check(out, work, args.limit_s)
    return dry_run(check) if args.dry_run else run(check)


if __name__ == "__main__":
    sys.exit(main())
