"""One cell, inside its own child processes: prepare assets (untimed, its own process), then
load -> measure memory and speed -> evaluate accuracy, through the cell's engine.

Nothing here knows an inference library: the engine (bench.engines) loads the model and
hands back a handle that generates, counts its weights and evaluates; this module owns the
order of the phases and the memory pollers. Everything measured is sent to the parent as
soon as it exists, so a cell that dies in a later phase still leaves the figures of the
phases it finished. The parent owns the row.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Optional

from bench.config import BenchConfig
from bench.errors import OutOfMemory, SkipCell, one_line
from bench.process import die_with_parent
from bench.provenance import cpu_model
from bench.secrets import scrubber

if TYPE_CHECKING:
    from bench.engines.base import Device, Engine, LoadedModel, OffloadBudget
    from bench.memory import DeviceMemory
    from bench.speed import SpeedResult


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


def _quiet() -> None:
    """Progress bars and library chatter are not measurements (engines silence their own)."""
    warnings.filterwarnings("ignore")
    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' progress bars
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def is_oom(exc: BaseException, engine: Optional["Engine"] = None) -> bool:
    """Out of device or host memory, as the engine recognises it (or generically)."""
    if engine is not None:
        return engine.is_oom(exc)
    return isinstance(exc, (OutOfMemory, MemoryError)) or "out of memory" in str(exc).lower()


@dataclass(frozen=True)
class Capacity:
    """The memory a cell runs under, and where that figure comes from (for skip reasons)."""

    bytes: int
    basis: str


class _TimedConditions:
    """What the machine (other processes' CPU) and the GPU (utilisation, clocks, other
    processes) did over exactly the timed window of the speed phase."""

    def __init__(self, foreign: Any, meter: "Optional[DeviceMemory]") -> None:
        self._foreign = foreign
        self._meter = meter
        self.fields: dict[str, Any] = {}

    def open(self) -> None:
        self._foreign.start()
        if self._meter is not None:
            self._meter.open_window()

    def close(self) -> None:
        self.fields["foreign_cpu_s"] = self._foreign.stop()
        if self._meter is not None:
            self.fields.update(self._meter.close_window())


class CellRun:
    """The phases of one measured cell; `engine` is known once setup has run."""

    def __init__(self, cfg: BenchConfig, report: Reporter) -> None:
        self.cfg = cfg
        self.report = report
        self.engine: Optional["Engine"] = None
        self.meter: Optional["DeviceMemory"] = None  # the device's memory (CUDA cells)
        self._context_known = False

    def measure(self) -> None:
        """Each figure is reported the moment it is measured."""
        from bench import memory
        from bench.engines import load_engine

        cfg, report = self.cfg, self.report
        report.phase("setup")
        engine = self.engine = load_engine(cfg.resolved_engine)
        engine.setup(cfg)
        device = engine.resolve_device(cfg.cell.device)
        host = memory.HostPeak()
        report.measured(device=device.type, host_rss_baseline_bytes=host.current(),
                        params=cfg.model.arch.params, compiled=cfg.cell.compile,
                        engine=engine.capabilities.name, **engine.versions())
        watched = [os.getpid()]  # the model's processes: this one until the engine says
        try:
            if device.type == "cuda":
                capacity = self._start_cuda(device, lambda: watched)
            else:
                capacity = Capacity(_host_total_bytes(),
                                    "of host RAM (this cell runs on the CPU)")
                report.measured(device_name=f"cpu: {cpu_model()} x{os.cpu_count()}",
                                device_total_bytes=capacity.bytes, emulated=False)
            budget = self._plan_capacity(device, capacity)

            report.phase("load")
            self._enter("load")
            host.start()
            start = time.perf_counter()
            wants_eval = cfg.eval.enabled and cfg.resolved_weights != "synthetic"
            try:
                loaded = engine.load(cfg, device, budget, for_eval=wants_eval)
            except BaseException:  # how far the load got on the device, for the row
                self._report_device_peak("peak_device_load_bytes", "load")
                raise
            try:
                self._measure_loaded(loaded, device, host, start, watched, wants_eval)
            finally:
                loaded.close()  # a server is stopped whatever happened
        finally:
            if self.meter is not None:
                self.meter.stop()

    def _enter(self, phase: str) -> None:
        if self.meter is not None:
            self.meter.enter(phase)

    def _report_device_peak(self, column: str, *phases: str) -> None:
        if self.meter is not None:
            self.report.measured(**{column: self.meter.peak(*phases).bytes})

    def _measure_loaded(self, loaded: "LoadedModel", device: "Device", host: Any,
                        start: float, watched: list[int], wants_eval: bool) -> None:
        from bench import memory
        from bench.conditions import ForeignCpu, load_avg
        from bench.speed import measure_speed

        cfg, report, engine = self.cfg, self.report, self.engine
        assert engine is not None
        engine.synchronize(device)
        # Quantization timed on its own (calibration, HQQ) is quantize_s, not load time.
        load_s = time.perf_counter() - start - (loaded.quantize_s or 0.0)
        load_peak: Optional[int] = host.stop()
        watched[:] = loaded.pids()
        in_process = watched == [os.getpid()]
        if not in_process:  # a server: its processes' peaks since they started (its load)
            host = memory.TreePeak(lambda: watched) if loaded.owns_processes else (
                memory.NoPeak())
            load_peak = host.stop()
        measured_quantize = {"quantize_s": loaded.quantize_s} if loaded.quantize_s else {}
        report.measured(load_s=load_s, peak_host_rss_load_bytes=load_peak,
                        peak_host_rss_bytes=load_peak, weights_bytes=loaded.weights_bytes(),
                        hf_id=loaded.hf_id, revision=loaded.revision,
                        quant_note=_quant_note(cfg, loaded), offload=loaded.offloaded,
                        weights_origin=loaded.weights_origin, **measured_quantize,
                        **loaded.facts())
        if self.meter is not None:
            self._context_after_load(loaded)
            self._report_device_peak("peak_device_load_bytes", "load")

        report.phase("speed")
        self._enter("speed")
        host.start()
        # the processes doing this cell's work: the model's, and a server's client (this one)
        timed = _TimedConditions(
            ForeignCpu(lambda: watched if in_process else [*watched, os.getpid()]),
            self.meter)
        client_cpu = time.process_time()
        speed = measure_speed(loaded, cfg.workload, cfg.model.arch.vocab_size, cfg.seed,
                              window=timed)
        client_cpu = time.process_time() - client_cpu
        speed_peak = host.stop()
        if not in_process:  # the server's figures, and what its client cost the machine
            report.measured(client_cpu_s=client_cpu, host_pss_bytes=host.pss())
        peaks = [p for p in (load_peak, speed_peak) if p is not None]
        report.measured(ttft_ms=speed.ttft_ms, ttft_ms_stdev=speed.ttft_ms_stdev,
                        prefill_tok_s=speed.prefill_tok_s, decode_tok_s=speed.decode_tok_s,
                        decode_tok_s_stdev=speed.decode_tok_s_stdev,
                        decode_ms_p50=speed.decode_ms_p50, decode_ms_p90=speed.decode_ms_p90,
                        repeats=speed.repeats, engine_prefill_tok_s=speed.engine_prefill_tok_s,
                        engine_decode_tok_s=speed.engine_decode_tok_s,
                        decode_tok_s_samples=list(speed.decode_tok_s_samples),
                        ttft_ms_samples=list(speed.ttft_ms_samples), timed_s=speed.timed_s,
                        warmup_calls=speed.warmup_calls, load_avg=load_avg(),
                        peak_host_rss_bytes=max(peaks) if peaks else None,
                        **timed.fields, **_serving_fields(speed))
        if device.type == "cuda":
            self._report_device_peaks(device, loaded)

        # Quality, then accuracy, on the same in-memory model: their batches cannot inflate
        # the memory figures of the stated workload (those were taken above), and quality
        # (seconds) comes before accuracy (minutes to hours), so a slow accuracy run cannot
        # cost it.
        self._enter("eval")
        if cfg.eval.enabled and not wants_eval:
            report.measured(eval_set=cfg.eval.name, eval_note="accuracy and quality not "
                            "measured: synthetic (random) weights")
        elif wants_eval:
            report.measured(eval_set=cfg.eval.name)
            if cfg.eval.quality and not engine.capabilities.full_logprobs:
                report.measured(quality_note=f"quality not measured: engine="
                                f"{engine.capabilities.name} exposes a few top log-"
                                f"probabilities per token, not the whole distribution the "
                                f"KL divergence needs")
            elif cfg.eval.quality:
                from bench.quality import measure_quality

                report.phase("quality")
                report.measured(**measure_quality(loaded, cfg))
                self._report_device_peak("peak_device_eval_bytes", "eval")
            if cfg.eval.accuracy:
                from bench.evals.harness import run_evals

                report.phase("eval")
                outcome = run_evals(loaded, cfg.eval, cfg.resolved_cache_dir)
                report.measured(**outcome.fields)
                self._report_device_peak("peak_device_eval_bytes", "eval")

    def _report_device_peaks(self, device: "Device", loaded: "LoadedModel") -> None:
        """The device peak of the stated workload (load and speed), how it was measured,
        and what the engine's own accounting adds (allocator peaks, a server's need)."""
        engine, report = self.engine, self.report
        assert engine is not None
        if engine.capabilities.allocator_peaks:
            report.measured(**engine.allocator_peaks(device))
        if self.meter is None:
            return
        peak = self.meter.peak("load", "speed")
        report.measured(peak_device_bytes=peak.bytes, device_peak_method=peak.method,
                        **({"memory_note": peak.note} if peak.bytes is None else {}))
        if peak.bytes is not None:
            report.measured(**loaded.device_need(peak.bytes))

    def _context_after_load(self, loaded: "LoadedModel") -> None:
        """Engines that create their CUDA context while loading (llama.cpp, servers): the
        watched processes' device memory now, minus the buffers the engine says it
        allocated, is the context and whatever else lives outside those buffers."""
        assert self.meter is not None
        if self._context_known:
            return
        buffers = loaded.device_buffers_bytes()
        now = self.meter.current().bytes
        if buffers is not None and now is not None and now >= buffers:
            self.report.measured(context_bytes=now - buffers)

    def _start_cuda(self, device: "Device", pids: Any) -> Capacity:
        """The device's identity and conditions (NVML, found by UUID), the memory meter
        (started before this process has a CUDA context), the context, the class cap (or a
        skip where the engine cannot emulate the class on this card), the allocator's peak
        counters."""
        from bench import gpu, memory

        cfg, engine, report = self.cfg, self.engine, self.report
        assert engine is not None
        try:
            found = gpu.device_for_ordinal(device.index)
            self.meter = memory.DeviceMemory(found, pids)
            report.measured(**found.facts(), **self.meter.conditions())
        except gpu.GpuLookupError as exc:  # no NVML: allocator figures remain
            logging.getLogger(__name__).warning("NVML unavailable: %s", exc)
            report.measured(memory_note=f"device peak not measured: {exc}")
        info = engine.start_device(cfg, device)
        context: Optional[int] = None
        if self.meter is not None:
            self.meter.start()
            if engine.capabilities.context_at_start:
                context = self.meter.current().bytes
                self._context_known = True
                report.measured(context_bytes=context)
        capacity = Capacity(info.total_bytes, f"total of {info.name} (gpu={cfg.gpu.name})")
        emulated = False
        class_bytes = cfg.gpu.vram_mib * 2**20 if cfg.gpu.vram_mib is not None else None
        if class_bytes is not None and class_bytes < info.total_bytes:
            emulation = engine.emulate_class(cfg, device, class_bytes, context)
            if emulation is None:
                raise SkipCell(f"gpu={cfg.gpu.name} is smaller than this {info.name} and "
                               f"engine={engine.capabilities.name} cannot cap device memory "
                               f"to emulate it; measure it with gpu=local on such a card")
            report.measured(**emulation)
            capacity = Capacity(class_bytes, f"usable on gpu={cfg.gpu.name} (capped on "
                                f"{info.name})")
            emulated = True
        if engine.capabilities.allocator_peaks:
            engine.reset_allocator_peaks(device)
        report.measured(device_name=info.name, device_total_bytes=info.total_bytes,
                        emulated=emulated)
        return capacity

    def _plan_capacity(self, device: "Device",
                       capacity: Capacity) -> "Optional[OffloadBudget]":
        """Skip a certain OOM (skip_predicted_oom) and size the offload budget, before loading."""
        from bench.engines.base import OffloadBudget
        from bench.predict import oom_reason, predict_peak

        cfg = self.cfg
        if cfg.offload and device.type != "cuda":
            raise SkipCell("offload=true needs a CUDA device to offload from; this cell runs "
                           "on the CPU")
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
                self.report.measured(predicted_peak_bytes=prediction.peak_bytes)
                raise SkipCell(reason)
        return budget

    def prepare(self) -> None:
        """Build what the cell loads but must not time: the tiny model, a GGUF conversion,
        the model's quality reference."""
        from bench.engines import load_engine
        from bench.quality import applies, ensure_reference

        self.report.phase("prepare")
        self.engine = load_engine(self.cfg.resolved_engine)
        self.engine.setup(self.cfg)
        self.report.measured(**self.engine.prepare(self.cfg))
        if applies(self.cfg):
            ensure_reference(self.cfg)


def _serving_fields(speed: "SpeedResult") -> dict[str, Any]:
    """The serving columns: what the clients saw (one client for in-process engines)."""
    return {"concurrency": speed.concurrency, "requests": speed.requests,
            "throughput_tok_s": speed.throughput_tok_s, "requests_per_s": speed.requests_per_s,
            "ttft_ms_p90": speed.ttft_ms_p90, "itl_ms_p50": speed.decode_ms_p50,
            "itl_ms_p90": speed.decode_ms_p90, "itl_ms_p99": speed.itl_ms_p99,
            "e2e_ms_p50": speed.e2e_ms_p50, "e2e_ms_p90": speed.e2e_ms_p90,
            "request_errors": speed.request_errors, "request_error": speed.first_error,
            "tokens_short": speed.tokens_short}


def _quant_note(cfg: BenchConfig, loaded: "LoadedModel") -> Optional[str]:
    """How the weights came to be, and for load-time schemes how much of the model the
    library really quantized (a 16-bit layer it skipped is 4x the bytes of a 4-bit one)."""
    notes = [loaded.note] if loaded.note else []
    share = loaded.quantized_share()
    if share is not None:
        notes.append(f"{cfg.quant.method} quantized {100 * share:.1f}% of the parameters "
                     f"(the rest in {cfg.quant.dtype})")
    return "; ".join(notes) or None


def _host_total_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


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
    die_with_parent()
    _redirect_output(log_path)
    if log_path:  # where an engine puts the logs of programs it starts (a server's)
        os.environ["BENCH_CELL_LOG"] = log_path
    _quiet()
    report = Reporter(conn)
    run = CellRun(cfg, report)
    try:
        (run.prepare if work == "prepare" else run.measure)()
        report.finish("done")
    except SkipCell as exc:
        report.finish("skipped", str(exc))
    except BaseException as exc:  # every failure is data: it becomes the row's status
        scrub = scrubber([cfg]).scrub
        detail = scrub("".join(traceback.format_exception(exc))[-4000:])
        report.finish("failed", {"status": "oom" if is_oom(exc, run.engine) else "error",
                                 "error": scrub(one_line(exc)), "error_detail": detail})
    finally:
        conn.close()
