"""One cell, inside its own child processes: prepare assets (untimed, its own process), then
load -> measure memory and speed -> evaluate accuracy.

Everything measured is sent to the parent as soon as it exists, so a cell that dies in a
later phase still leaves the figures of the phases it finished. The parent owns the row.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Optional

from bench.config import BenchConfig
from bench.errors import SkipCell


class Reporter:
    """The child's side of the pipe: phases for the progress display, figures for the row."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def phase(self, name: str) -> None:
        self._conn.send(("phase", name))

    def measured(self, **fields: Any) -> None:
        self._conn.send(("measured", fields))

    def finish(self, kind: str, payload: Any = None) -> None:
        self._conn.send((kind, payload))


def _die_with_parent() -> None:
    """If the sweep is killed, its cell must not live on measuring nothing (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _quiet() -> None:
    """Library chatter (torchao's optional kernels, deprecations) is not a measurement."""
    warnings.filterwarnings("ignore")
    for name in ("torchao", "torch.utils._pytree", "bitsandbytes", "transformers", "lm_eval",
                 "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' progress bars
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:500]


def _scrub(text: str) -> str:
    token = os.environ.get("HF_TOKEN")
    return text.replace(token, "<HF_TOKEN>") if token else text


def resolve_device(requested: str) -> "Any":
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise SkipCell("needs CUDA: cell.device=cuda but no CUDA device is visible")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def measure(cfg: BenchConfig, report: Reporter) -> None:
    """The cell's phases; each figure is reported the moment it is measured."""
    import torch

    from bench import memory
    from bench.loading import architecture_params, load_model
    from bench.speed import measure_speed

    report.phase("setup")
    if cfg.cell.threads:
        torch.set_num_threads(cfg.cell.threads)
    device = resolve_device(cfg.cell.device)
    if cfg.quant.requires_cuda and device.type != "cuda":
        raise SkipCell(f"needs CUDA: quant={cfg.quant.name} runs on CUDA devices only")
    host = memory.HostPeak()
    params = architecture_params(cfg.model.arch)
    report.measured(device=device.type, host_rss_baseline_bytes=host.current(),
                    params=params, compiled=cfg.cell.compile,
                    torch=torch.__version__, cuda=torch.version.cuda)
    nvml: Optional[memory.NvmlPeak] = None
    if device.type == "cuda":
        nvml, capacity = _start_cuda(cfg, device, report)
    else:
        capacity = Capacity(_host_total_bytes(), "of host RAM (this cell runs on the CPU)")
        report.measured(device_name=_cpu_name(), device_total_bytes=capacity.bytes,
                        emulated=False)
    budget = _plan_capacity(cfg, device, capacity, report)

    report.phase("load")
    host.start()
    start = time.perf_counter()
    wants_eval = cfg.eval.enabled and cfg.resolved_weights != "synthetic"
    loaded = load_model(cfg, device, with_tokenizer=wants_eval, budget=budget)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    # Quantization timed on its own (calibration, HQQ) is quantize_s, not load time.
    load_s = time.perf_counter() - start - (loaded.quantize_s or 0.0)
    load_peak = host.stop()
    report.measured(load_s=load_s, quantize_s=loaded.quantize_s,
                    peak_host_rss_load_bytes=load_peak,
                    peak_host_rss_bytes=load_peak,
                    weights_bytes=memory.weights_bytes(loaded.model),
                    hf_id=loaded.hf_id, revision=loaded.revision,
                    quant_note=_quant_note(cfg, loaded, params))

    report.phase("speed")
    model = loaded.model
    if cfg.cell.compile:
        model.forward = torch.compile(model.forward, dynamic=True)
    host.start()
    speed = measure_speed(model, cfg.workload, cfg.model.arch.vocab_size, device, cfg.seed)
    speed_peak = host.stop()
    report.measured(ttft_ms=speed.ttft_ms, ttft_ms_stdev=speed.ttft_ms_stdev,
                    prefill_tok_s=speed.prefill_tok_s, decode_tok_s=speed.decode_tok_s,
                    decode_tok_s_stdev=speed.decode_tok_s_stdev,
                    decode_ms_p50=speed.decode_ms_p50, decode_ms_p90=speed.decode_ms_p90,
                    repeats=speed.repeats, peak_host_rss_bytes=max(load_peak, speed_peak))
    if device.type == "cuda":
        peaks = memory.cuda_allocator_peaks(device)
        report.measured(peak_alloc_bytes=peaks.peak_alloc_bytes,
                        peak_reserved_bytes=peaks.peak_reserved_bytes,
                        peak_device_bytes=nvml.stop() if nvml else None)

    # Accuracy comes last, on the same in-memory model, so its batches cannot inflate the
    # memory figures of the stated workload (those were taken above).
    if cfg.eval.enabled and not wants_eval:
        report.measured(eval_set=cfg.eval.name,
                        eval_note="accuracy not measured: synthetic (random) weights")
    elif wants_eval:
        from bench.evals.harness import run_evals

        report.phase("eval")
        outcome = run_evals(model, loaded.tokenizer, cfg.eval, cfg.resolved_cache_dir)
        report.measured(**outcome.fields)


def _quant_note(cfg: BenchConfig, loaded: "Any", params: int) -> Optional[str]:
    """How the weights came to be, and for load-time schemes how much of the model the
    library really quantized (a 16-bit layer it skipped is 4x the bytes of a 4-bit one)."""
    notes = [loaded.note] if loaded.note else []
    if cfg.quant.method in ("bnb", "torchao", "hqq"):
        from bench.quant import quantized_params

        share = quantized_params(loaded.model) / params
        notes.append(f"{cfg.quant.method} quantized {100 * share:.1f}% of the parameters "
                     f"(the rest in {cfg.quant.dtype})")
    return "; ".join(notes) or None


@dataclass(frozen=True)
class Capacity:
    """The memory a cell runs under, and where that figure comes from (for skip reasons)."""

    bytes: int
    basis: str


def _plan_capacity(cfg: BenchConfig, device: "Any", capacity: Capacity,
                   report: Reporter) -> "Optional[Any]":
    """Skip a certain OOM (skip_predicted_oom) and size the offload budget, before loading."""
    from bench.offload import OffloadBudget
    from bench.predict import oom_reason, predict_peak

    if cfg.offload and device.type != "cuda":
        raise SkipCell("offload=true needs a CUDA device to offload from; this cell runs on "
                       "the CPU")
    if not (cfg.skip_predicted_oom or cfg.offload):
        return None
    prediction = predict_peak(cfg)
    budget = (OffloadBudget.for_capacity(capacity.bytes, prediction.kv_cache_bytes,
                                         _host_total_bytes()) if cfg.offload else None)
    if cfg.skip_predicted_oom:
        limit = capacity if budget is None else Capacity(
            capacity.bytes + budget.host_bytes, f"{capacity.basis} plus the host RAM budget")
        reason = oom_reason(cfg, prediction, limit.bytes, limit.basis)
        if reason is not None:
            report.measured(predicted_peak_bytes=prediction.peak_bytes)
            raise SkipCell(reason)
    return budget


def _start_cuda(cfg: BenchConfig, device: "Any",
                report: Reporter) -> "tuple[Optional[Any], Capacity]":
    """CUDA context baseline, NVML poller, and the allocator cap that emulates a GPU class."""
    import torch

    from bench import memory

    torch.cuda.init()
    torch.empty(1, device=device)  # creates the context
    props = torch.cuda.get_device_properties(device)
    total = int(props.total_memory)
    emulated = False
    capacity = Capacity(total, f"total of {props.name} (gpu={cfg.gpu.name})")
    if cfg.gpu.vram_mib is not None:
        cap = cfg.gpu.vram_mib * 2**20
        if cap < total:
            torch.cuda.set_per_process_memory_fraction(cap / total, device)
            emulated = True
            capacity = Capacity(cap, f"usable on gpu={cfg.gpu.name} (allocator capped on "
                                     f"{props.name})")
    nvml: Optional[memory.NvmlPeak] = None
    try:
        nvml = memory.NvmlPeak(device.index or 0)
        report.measured(context_bytes=nvml.used_bytes(), driver=nvml.driver_version())
        nvml.start()
    except Exception as exc:  # NVML missing or not permitted: allocator figures remain
        logging.getLogger(__name__).warning("NVML unavailable: %s", exc)
    memory.reset_cuda_peaks(device)
    report.measured(device_name=props.name, device_total_bytes=total, emulated=emulated)
    return nvml, capacity


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"cpu: {line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    import platform

    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"


def _host_total_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def prepare(cfg: BenchConfig, report: Reporter) -> None:
    """Build what the cell loads but must not time: the offline tiny model (cached)."""
    if cfg.resolved_weights == "tiny":
        from bench.tiny import ensure_tiny_model

        report.phase("prepare")
        ensure_tiny_model(cfg.model, cfg.resolved_cache_dir)


def _redirect_output(log_path: Optional[str]) -> None:
    """Library chatter goes to the cell's log file, not over the progress display."""
    if not log_path:
        return
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def child_entry(work: str, cfg: BenchConfig, conn: Connection,
                log_path: Optional[str] = None) -> None:
    """Entry point of a spawned cell process; `work` is "prepare" or "measure"."""
    _die_with_parent()
    _redirect_output(log_path)
    _quiet()
    report = Reporter(conn)
    try:
        (prepare if work == "prepare" else measure)(cfg, report)
        report.finish("done")
    except SkipCell as exc:
        report.finish("skipped", str(exc))
    except BaseException as exc:  # every failure is data: it becomes the row's status
        detail = _scrub("".join(traceback.format_exception(exc))[-4000:])
        report.finish("failed", {"status": "oom" if is_oom(exc) else "error",
                                 "error": _scrub(one_line(exc)), "error_detail": detail})
    finally:
        conn.close()
