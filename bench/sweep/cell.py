"""One cell, inside its own child processes: prepare assets (untimed, its own process), then
load -> measure memory and speed -> evaluate accuracy, through the cell's engine.

Nothing here knows an inference library: the engine (bench.engines) loads the model and
hands back a handle that generates, counts its weights and evaluates; this module owns the
order of the phases and the memory pollers. Everything measured is sent to the parent as
soon as it exists, so a cell that dies in a later phase still leaves the figures of the
phases it finished. The parent owns the row.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Optional

from bench.core.config import BenchConfig
from bench.core.errors import SkipCell, is_oom, one_line
from bench.core.process import die_with_parent
from bench.core.provenance import cpu_model
from bench.core.secrets import scrubber
from bench.sweep.children import adopt
from bench.tasks import Speed, task_of

if TYPE_CHECKING:
    from bench.engines.base import Device, DeviceInfo, Engine, LoadedModel, OffloadBudget
    from bench.meters import CellFacts, Meters


class Reporter:
    """The child's side of the pipe: phases for the progress display, figures for the row."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def phase(self, name: str) -> None:
        self._conn.send(("phase", name))

    def measured(self, **fields: Any) -> None:
        self._conn.send(("measured", fields))

    def progress(self, fields: dict[str, Any]) -> None:
        """How far a long phase is (questions done of total, ETA): for the display only."""
        self._conn.send(("progress", fields))

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


@dataclass(frozen=True)
class Capacity:
    """The memory a cell runs under, and where that figure comes from (for skip reasons)."""

    bytes: int
    basis: str


# What a measuring child runs: every phase ("all"); everything but accuracy, which it leaves
# pending ("measure", a two-stage sweep's first stage); accuracy alone on the model loaded
# again ("accuracy", its second stage).
STAGES = ("all", "measure", "accuracy")


class CellRun:
    """The phases of one measured cell; `engine` is known once setup has run."""

    def __init__(self, cfg: BenchConfig, report: Reporter, stage: str = "all") -> None:
        self.cfg = cfg
        self.report = report
        self.stage = stage
        self.engine: Optional["Engine"] = None
        self.watched = [os.getpid()]  # the model's processes: this one until a server's
        self.task = task_of(cfg)

    def measure(self) -> None:
        """Each figure is reported the moment it is measured (by the meters: bench.meters)."""
        from bench.engines import load_engine
        from bench.meters import CellFacts, Meters, build_meters

        cfg, report = self.cfg, self.report
        report.phase("setup")
        engine = self.engine = load_engine(cfg.resolved_engine)
        engine.setup(cfg)
        device = engine.resolve_device(cfg.cell.device)
        report.measured(device=device.type, params=cfg.model.arch.params,
                        compiled=cfg.cell.compile, engine=engine.capabilities.name,
                        **engine.versions())
        facts = CellFacts(report.measured, cfg, engine, device)
        if device.type == "cuda":
            capacity, facts = self._start_cuda(device, facts)
        else:
            capacity = Capacity(_host_total_bytes(), "of host RAM (this cell runs on the CPU)")
            report.measured(device_name=f"cpu: {cpu_model()} x{os.cpu_count()}",
                            device_total_bytes=capacity.bytes, emulated=False)
        meters = Meters(report.measured, build_meters(facts))
        try:
            budget = self._plan_capacity(device, capacity)
            meters.start()
            self._measure_model(device, budget, meters)
        finally:
            meters.stop()

    def _measure_model(self, device: "Device", budget: "Optional[OffloadBudget]",
                       meters: "Meters") -> None:
        cfg, report, engine = self.cfg, self.report, self.engine
        assert engine is not None
        report.phase("load")
        meters.phase("load")
        start = time.perf_counter()
        wants_eval = cfg.eval.enabled and cfg.resolved_weights != "synthetic"
        loaded = engine.load(cfg, device, budget, for_eval=wants_eval)
        try:
            engine.synchronize(device)
            # Quantization timed on its own (calibration, HQQ) is quantize_s, not load time.
            load_s = time.perf_counter() - start - (loaded.quantize_s or 0.0)
            measured_quantize = {"quantize_s": loaded.quantize_s} if loaded.quantize_s else {}
            weights = loaded.weights_bytes()
            report.measured(load_s=load_s, weights_bytes=weights,
                            hf_id=loaded.hf_id, revision=loaded.revision,
                            quant_note=_quant_note(cfg, loaded), offload=loaded.offloaded,
                            weights_origin=loaded.weights_origin, **measured_quantize,
                            **{**_bits_per_weight(cfg, weights), **loaded.facts()})
            self.watched = loaded.pids()
            meters.loaded(loaded)
            speed: Optional[Speed] = None
            if self.stage != "accuracy":  # the accuracy stage has its speed already
                report.phase("speed")
                meters.phase("speed")
                speed = self.task.measure_speed(loaded, cfg, meters)
                report.measured(**speed.fields, **loaded.speed_facts())
            meters.phase("eval")
            self._evaluate(loaded, wants_eval, speed)
        finally:
            loaded.close()  # a server is stopped whatever happened

    def _evaluate(self, loaded: "LoadedModel", wants_eval: bool,
                  speed: "Optional[Speed]") -> None:
        """Quality, then accuracy, on the same in-memory model: their batches cannot inflate
        the memory figures of the stated workload (those were taken above), and quality
        (seconds) comes before accuracy (minutes to hours), so a slow accuracy run cannot
        cost it."""
        cfg, report, task = self.cfg, self.report, self.task
        if cfg.eval.enabled and not wants_eval:
            report.measured(eval_set=cfg.eval.name, eval_note="accuracy and quality not "
                            "measured: synthetic (random) weights")
            return
        if not wants_eval:
            return
        report.measured(eval_set=cfg.eval.name)
        if self.stage != "accuracy":  # which has its quality from the first stage
            self._quality(loaded, speed)
        if cfg.eval.accuracy and not task.accuracy:
            report.measured(eval_note=f"accuracy not measured: no accuracy task for "
                                      f"{task.name} yet")
        elif cfg.eval.accuracy and self.stage == "measure":
            report.measured(accuracy_pending=True)
        elif cfg.eval.accuracy:
            from bench.evals.harness import run_evals

            report.phase("eval")
            outcome = run_evals(loaded, cfg.eval, cfg.resolved_cache_dir, report.progress)
            report.measured(**outcome.fields)

    def _quality(self, loaded: "LoadedModel", speed: "Optional[Speed]") -> None:
        """The task's quality against its reference (else the reason it cannot)."""
        engine = self.engine
        assert engine is not None
        note = self.task.quality_note(self.cfg, engine.capabilities)
        if note:
            self.report.measured(quality_note=note)
        elif self.task.measures_quality(self.cfg, engine.capabilities):
            self.report.phase("quality")
            self.report.measured(**self.task.measure_quality(loaded, self.cfg, speed))

    def _start_cuda(self, device: "Device",
                    facts: "CellFacts") -> "tuple[Capacity, CellFacts]":
        """The device's identity and conditions (NVML, found by UUID), its memory poller
        (started before this process has a CUDA context), the context, the class cap (or a
        skip where the engine cannot emulate the class on this card), the allocator's peak
        counters. Returns the capacity and what the meters are built from."""
        from bench.core import gpu
        from bench.meters.device_memory import DeviceMemory

        cfg, engine, report = self.cfg, self.engine, self.report
        assert engine is not None
        memory: Optional[DeviceMemory] = None
        found: Optional[gpu.NvmlDevice] = None
        try:
            found = gpu.device_for_ordinal(device.index)
            memory = DeviceMemory(found, lambda: self.watched)
            report.measured(**found.facts(), **memory.conditions())
        except gpu.GpuLookupError as exc:  # no NVML: allocator figures remain
            logging.getLogger(__name__).warning("NVML unavailable: %s", exc)
            report.measured(memory_note=f"device peak not measured: {exc}")
        try:
            info = engine.start_device(cfg, device)
            context: Optional[int] = None
            if memory is not None:
                memory.start()
                if engine.capabilities.context_at_start:
                    context = _context_bytes(memory.current().bytes,
                                             engine.allocator_reserved_bytes(device))
                    report.measured(context_bytes=context)
            capacity = self._class_capacity(device, info, context)
        except BaseException:  # its meter never started: the poller stops here
            if memory is not None:
                memory.stop()
            raise
        return capacity, dataclasses.replace(facts, gpu=found, device_memory=memory,
                                             context_bytes=context)

    def _class_capacity(self, device: "Device", info: "DeviceInfo",
                        context: Optional[int]) -> Capacity:
        """The capacity the cell runs under: the card's, or the GPU class's, emulated by
        the engine (a skip where it cannot cap memory); the allocator's peaks reset."""
        cfg, engine, report = self.cfg, self.engine, self.report
        assert engine is not None
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
        from bench.tasks.bounds import oom_reason

        cfg = self.cfg
        if cfg.offload and device.type != "cuda":
            raise SkipCell("offload=true needs a CUDA device to offload from; this cell runs "
                           "on the CPU")
        if not (cfg.skip_predicted_oom or cfg.offload):
            return None
        prediction = self.task.lower_bound(cfg)
        if prediction is None:  # a task without a bound (a pipeline's): its peak is measured
            return None
        budget = (OffloadBudget.for_capacity(capacity.bytes, prediction.kv_cache_bytes,
                                             _host_total_bytes()) if cfg.offload else None)
        if cfg.skip_predicted_oom:
            limit = capacity if budget is None else Capacity(
                capacity.bytes + budget.host_bytes, f"{capacity.basis} plus the host RAM budget")
            reason = oom_reason(cfg, prediction, limit.bytes, limit.basis)
            if reason is not None:  # the row records the bound itself (runner.build_row)
                raise SkipCell(reason)
        return budget

    def prepare(self) -> None:
        """Build what the cell loads but must not time: the tiny model, a GGUF conversion,
        the task's quality reference."""
        from bench.engines import load_engine

        self.report.phase("prepare")
        self.engine = load_engine(self.cfg.resolved_engine)
        self.engine.setup(self.cfg)
        self.report.measured(**self.engine.prepare(self.cfg))
        self.task.prepare(self.cfg)


def _context_bytes(process_bytes: Optional[int], allocator_bytes: Optional[int]) -> Optional[int]:
    """The CUDA context: the process's device memory less what its allocator holds (cuBLAS's
    workspace, the warm-up's blocks), which the allocator's cap already counts."""
    if process_bytes is None:
        return None
    return process_bytes - (allocator_bytes or 0)


def _bits_per_weight(cfg: BenchConfig, weights: Optional[int]) -> dict[str, float]:
    """Weight storage per published parameter (an engine that reads its file says its own)."""
    params = cfg.model.arch.params
    if not weights or not isinstance(params, int) or params <= 0:
        return {}
    return {"bits_per_weight": round(8 * weights / params, 3)}


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
                log_path: Optional[str] = None, stage: str = "all",
                parent_environ: Optional[dict[str, str]] = None) -> None:
    """Entry point of a cell's process; `work` is "prepare" or "measure" (of `stage`);
    `parent_environ`: the parent's environment (bench.sweep.children)."""
    die_with_parent()
    if parent_environ is not None:
        adopt(parent_environ)
    _redirect_output(log_path)
    if log_path:  # where an engine puts the logs of programs it starts (a server's)
        os.environ["BENCH_CELL_LOG"] = log_path
    _quiet()
    report = Reporter(conn)
    run = CellRun(cfg, report, stage)
    try:
        (run.prepare if work == "prepare" else run.measure)()
        report.finish("done")
    except SkipCell as exc:
        report.finish("skipped", str(exc))
    except BaseException as exc:  # every failure is data: it becomes the row's status
        scrub = scrubber([cfg]).scrub
        detail = scrub("".join(traceback.format_exception(exc))[-4000:])
        oom = run.engine.is_oom(exc) if run.engine is not None else is_oom(exc)
        report.finish("failed", {"status": "oom" if oom else "error",
                                 "error": scrub(one_line(exc)), "error_detail": detail})
    finally:
        conn.close()
