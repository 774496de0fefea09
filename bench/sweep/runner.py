"""The parent's side of a cell: spawn the child, block on its pipe, turn its fate into a row.

The parent never polls in a loop: it waits on the pipe with the cell's remaining time as
the timeout, so it uses no CPU while the child measures. Whatever happens to the child
(done, skip, exception, OOM, crash, timeout), exactly one row is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from omegaconf import OmegaConf

from bench.core.config import PHASE_GROUPS, BenchConfig, EvalConfig
from bench.core.errors import one_line
from bench.core.process import OomCounters, Terminated, deferred_termination, kill_tree
from bench.core.provenance import static_provenance
from bench.core.schema import COLUMNS, REUSABLE_ACCURACY, STATUS_FAILED, ResultRow
from bench.core.secrets import Scrubber, redacted, scrubber
from bench.engines import capabilities, needs_preparing
from bench.results.identity import accuracy_key
from bench.results.outputs import keep_unsaved
from bench.results.store import existing_row, map_column, run_rows, write_row
from bench.sweep.cell import child_entry
from bench.sweep.cells import Cell
from bench.sweep.children import cell_context, parent_environ
from bench.tasks import task_of
from bench.tasks.bounds import PREDICTED_OOM

PhaseCallback = Callable[[str], None]
ProgressCallback = Callable[[dict[str, Any]], None]
_GRACE_S = 30.0
# what cell.retry_failed measures again (an oom is a result: the model does not fit)
RETRIED_STATUSES = ("error", "timeout")


@dataclass
class CellOutcome:
    """What the child told us (or what its death tells us)."""

    status: Optional[str] = None
    error: Optional[str] = None
    measured: dict[str, Any] = field(default_factory=dict)
    last_phase: str = "start"
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds, parent's clock
    terminated: Optional[Terminated] = None  # a signal from outside ended the cell
    phase_started: float = field(default_factory=time.monotonic)  # of last_phase


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# What ggml (llama.cpp) and the CUDA runtime print before aborting on a failed allocation:
# the child dies of SIGABRT with no word to the parent, so its log is the evidence.
_DEVICE_OOM_MARKERS = ("out of memory", "cudamalloc failed", "failed to allocate",
                       "unable to allocate", "cuda error: out of memory",
                       "cublas_status_alloc_failed", "ggml_gallocr_reserve_n: failed")
_LOG_TAIL_BYTES = 64 * 1024


def _log_oom_line(log_path: Optional[str]) -> Optional[str]:
    """The last out-of-memory line in the tail of the cell's log, if there is one."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    hits = [line.strip() for line in tail.splitlines()
            if any(marker in line.lower() for marker in _DEVICE_OOM_MARKERS)]
    return hits[-1][:300] if hits else None


def _death_message(exitcode: Optional[int], phase: str, oom_evidence: Optional[str],
                   log_oom: Optional[str] = None) -> tuple[str, str]:
    """The row's status and message for a child that died without a last word. A SIGKILL is
    an `oom` only on the kernel's own evidence (its OOM-kill counters went up meanwhile):
    a SIGKILL from outside must not put ❌ on a model that fits. Any other death is an `oom`
    when the cell's log ends in an allocation failure (ggml aborts the process on a CUDA
    out-of-memory inside decoding)."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGKILL and oom_evidence:
            return "oom", (f"cell process killed by the kernel's out-of-memory killer during "
                           f"{phase} ({oom_evidence})")
        if -exitcode == signal.SIGKILL:
            return "error", (f"cell process killed by SIGKILL during {phase}, not by the "
                             f"out-of-memory killer (its counters did not change): killed "
                             f"from outside")
        if log_oom:
            return "oom", f"cell process died from {name} during {phase}: {log_oom}"
        return "error", f"cell process died from {name} during {phase}"
    if log_oom:
        return "oom", f"cell process exited with code {exitcode} during {phase}: {log_oom}"
    return "error", f"cell process exited with code {exitcode} during {phase} without a result"


class Deadlines:
    """The deadline of the phase that is running: each phase group (bench.core.config.PHASE_GROUPS)
    has its own, set when its first phase starts, never past the whole cell's cap."""

    def __init__(self, cfg: BenchConfig, cap: Optional[float]) -> None:
        self._timeouts = cfg.cell.phase_timeout_s
        self._cap = cap
        self.group: Optional[str] = None
        self.at = math.inf

    def enter(self, phase: str) -> None:
        group = PHASE_GROUPS.get(phase, self.group or "measure")
        if group != self.group:
            self.group = group
            self.at = time.monotonic() + getattr(self._timeouts, group)
        if self._cap is not None:
            self.at = min(self.at, self._cap)

    def message(self, phase: str, cfg: BenchConfig) -> str:
        if self._cap is not None and self.at >= self._cap:
            return f"cell exceeded cell.timeout_s={cfg.cell.timeout_s:g} during {phase}"
        limit = getattr(self._timeouts, str(self.group))
        return (f"phase {self.group} exceeded cell.phase_timeout_s.{self.group}={limit:g} "
                f"during {phase}")


def run_isolated(cfg: BenchConfig, on_phase: PhaseCallback, work: str = "measure",
                 log_path: Optional[str] = None, cap: Optional[float] = None,
                 stage: str = "all",
                 on_progress: Optional[ProgressCallback] = None) -> CellOutcome:
    """Run one cell's `work` (of `stage`: bench.sweep.cell.STAGES) in a spawned child; block until
    it reports, dies, or runs out of its phase's time (`cap`: the whole cell's deadline, a
    monotonic time)."""
    ctx = cell_context(capabilities(cfg.resolved_engine).preload, cfg.cell.fork_server,
                       cfg.cell.device)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_entry,
                       args=(work, cfg, send, log_path, stage, parent_environ()),
                       name=f"bench-{work}")
    outcome = CellOutcome()
    deadlines = Deadlines(cfg, cap)
    deadlines.enter("prepare" if work == "prepare" else "setup")
    oom_before = OomCounters.now()
    proc.start()
    send.close()
    outcome.phase_started = time.monotonic()
    try:
        _wait(proc, recv, outcome, deadlines, cfg, log_path, oom_before, on_phase, on_progress)
    except Terminated as exc:  # a time limit from outside: the cell ends, as a row
        with deferred_termination():
            kill_tree(proc.pid)
        outcome.status, outcome.terminated = "timeout", exc
        outcome.error = (f"terminated by {exc} during {outcome.last_phase}: a signal from "
                         f"outside (a time limit such as timeout(1)'s or a scheduler's, or a "
                         f"kill); the cell's processes were killed")
        outcome.measured["terminated_by"] = str(exc)
    finally:
        _close_phase(outcome)
        recv.close()
        proc.join(_GRACE_S)
        if proc.is_alive():
            kill_tree(proc.pid)
            proc.join()
    if outcome.status in STATUS_FAILED:
        outcome.measured["failed_phase"] = outcome.last_phase
    return outcome


def _wait(proc: Any, recv: Any, outcome: CellOutcome, deadlines: Deadlines, cfg: BenchConfig,
          log_path: Optional[str], oom_before: OomCounters, on_phase: PhaseCallback,
          on_progress: Optional[ProgressCallback]) -> None:
    """Block on the child's pipe until it reports its end, dies, or runs out of time."""
    while outcome.status is None:
        remaining = deadlines.at - time.monotonic()
        if remaining <= 0 or not recv.poll(remaining):
            kill_tree(proc.pid)
            outcome.status = "timeout"
            outcome.error = deadlines.message(outcome.last_phase, cfg)
            return
        try:
            kind, payload = recv.recv()
        except EOFError:  # the child is gone without a last word
            proc.join(_GRACE_S)
            evidence = OomCounters.now().evidence_since(oom_before)
            outcome.status, outcome.error = _death_message(
                proc.exitcode, outcome.last_phase, evidence, _log_oom_line(log_path))
            return
        if kind == "phase":
            _close_phase(outcome)
            outcome.last_phase = payload
            deadlines.enter(payload)
            on_phase(payload)
        elif kind == "measured":
            outcome.measured.update(payload)
        elif kind == "progress":
            if on_progress is not None:
                on_progress(payload)
        elif kind == "done":
            outcome.status = "ok"
        elif kind == "skipped":
            outcome.status, outcome.error = "skipped", payload
        elif kind == "failed":
            outcome.status, outcome.error = payload["status"], payload["error"]
            outcome.measured["error_detail"] = payload["error_detail"]


def _close_phase(outcome: CellOutcome) -> None:
    """Book the time since the running phase started to it; the next one starts now."""
    now = time.monotonic()
    name = outcome.last_phase
    outcome.phases[name] = outcome.phases.get(name, 0.0) + now - outcome.phase_started
    outcome.phase_started = now


def build_row(cell: Cell, run_id: str, outcome: CellOutcome, started_at: dt.datetime,
              finished_at: dt.datetime) -> ResultRow:
    cfg = cell.config
    row = ResultRow(
        cell_id=cell.cell_id, run_id=run_id, started_at=started_at, finished_at=finished_at,
        status=outcome.status, error=outcome.error, model=cfg.model.name,
        hf_id=cfg.model.hf_id, revision=cfg.model.revision, weights=cfg.resolved_weights,
        quant=cfg.quant.name, bits=cfg.quant.bits, gpu_class=cfg.gpu.name, task=cfg.model.task,
        batch_size=cfg.workload.batch_size, compiled=cfg.cell.compile,
        offload=cfg.offload or cfg.engine.offloads(),
        **task_of(cfg).workload_fields(cfg),
        accuracy_key=accuracy_key(cfg), engine=cfg.resolved_engine,
        config_yaml=OmegaConf.to_yaml(OmegaConf.structured(redacted(cfg))),
        **static_provenance(),
    )
    bound = task_of(cfg).lower_bound(cfg)  # facts only: a measurement below it is a bug
    if bound is not None:
        row.predicted_peak_bytes = bound.peak_bytes
        row.predicted_weights_bytes = bound.weights_bytes
    known = {k: v for k, v in outcome.measured.items() if k in COLUMNS}
    unknown = sorted(set(outcome.measured) - set(known))
    if unknown:  # a programming error must not cost the row its figures
        print(f"bench: warning: cell {cell.cell_id} reported fields the schema lacks: "
              f"{', '.join(unknown)}", file=sys.stderr)
    return scrub_row(dataclasses.replace(row, **known), scrubber([cfg]))


def scrub_row(row: ResultRow, scrub: Scrubber) -> ResultRow:
    """The row without a secret in any of its strings (whatever the cell reported)."""
    changed = {f.name: scrub.scrub(value) for f in dataclasses.fields(row)
               if isinstance(value := getattr(row, f.name), str)}
    return dataclasses.replace(row, **changed)


def measure_in_children(cfg: BenchConfig, on_phase: PhaseCallback,
                        log_path: Optional[str], stage: str = "all",
                        on_progress: Optional[ProgressCallback] = None) -> CellOutcome:
    """Prepare assets in one child (untimed), then measure in a fresh one: building or
    converting an asset must not show up in load_s or in the host memory peaks. Each phase
    has its own deadline (cell.phase_timeout_s), cell.timeout_s caps them all; figures the
    preparation reports (a conversion's quantize_s) join the row."""
    cap = (time.monotonic() + cfg.cell.timeout_s) if cfg.cell.timeout_s is not None else None
    prepared_fields: dict[str, Any] = {}
    if needs_preparing(cfg) or task_of(cfg).needs_reference(cfg):
        prepared = run_isolated(cfg, on_phase, "prepare", log_path, cap)
        if prepared.status != "ok":
            prepared.error = f"preparing the cell failed: {prepared.error}"
            return prepared
        prepared_fields = prepared.measured
        # the prepare process's start-up is part of preparing
        prepared_fields["phase_s"] = {"prepare": sum(prepared.phases.values())}
    outcome = run_isolated(cfg, on_phase, "measure", log_path, cap, stage, on_progress)
    outcome.measured = {**prepared_fields, **outcome.measured}
    outcome.measured["phase_s"] = {**prepared_fields.get("phase_s", {}), **outcome.phases}
    return outcome


def measure_again(cfg: BenchConfig, previous: dict[str, Any]) -> bool:
    """Whether a cell this run already has a row for is measured again: a cell a signal
    from outside interrupted (terminated_by), failed cells under cell.retry_failed, and
    predicted-OOM skips once skip_predicted_oom is off (the user now wants the real OOM or
    fit)."""
    if previous["status"] == "skipped" and str(previous.get("error") or "").startswith(
            PREDICTED_OOM):
        return not cfg.skip_predicted_oom
    if previous.get("terminated_by"):  # interrupted from outside, not measured: resume it
        return True
    return cfg.cell.retry_failed and previous["status"] in RETRIED_STATUSES


def reusable_accuracy(cfg: BenchConfig, results_dir: str, run_id: str) -> dict[str, Any]:
    """Accuracy another cell of this run measured on the same weights, scheme, engine and
    eval settings (another workload, another GPU class): the same numbers, so they are
    taken over instead of evaluating again. Empty when there is none."""
    if not cfg.eval.enabled or cfg.resolved_weights == "synthetic":
        return {}
    key = accuracy_key(cfg)
    for row in run_rows(results_dir, run_id):
        if (row.get("accuracy_key") == key and row["status"] == "ok"
                and not row.get("accuracy_pending")
                and (bool(row.get("accuracy")) or any(
                    row.get(c) is not None for c in ("mmlu_acc", "humaneval_pass1",
                                                     "kld_mean")))):
            return {**{name: row.get(name) for name in REUSABLE_ACCURACY},
                    "eval_note": f"accuracy reused from cell {row['cell_id']} of this run "
                                 f"(same weights, scheme and eval settings; the workload does "
                                 f"not change accuracy)"}
    return {}


def run_cell(cell: Cell, run_id: str, results_dir: str, on_phase: PhaseCallback,
             log_path: Optional[str] = None, stage: str = "all",
             on_progress: Optional[ProgressCallback] = None) -> Optional[ResultRow]:
    """Measure one cell (the phases of `stage`: bench.sweep.cell.STAGES) and write its row; None
    when this run already has its row (in the accuracy stage: a row not waiting for it)."""
    cfg = cell.config
    previous = existing_row(results_dir, run_id, cell.cell_id)
    if stage == "accuracy":
        if previous is None or not previous.get("accuracy_pending"):
            return None
        return _complete_accuracy(cell, run_id, results_dir, previous, on_phase, log_path,
                                  on_progress)
    if previous is not None and not measure_again(cfg, previous):
        return None
    started_at = _utcnow()
    try:
        accuracy = reusable_accuracy(cfg, results_dir, run_id)
        measured_cfg = (dataclasses.replace(cfg, eval=EvalConfig()) if accuracy else cfg)
        outcome = measure_in_children(measured_cfg, on_phase, log_path, stage, on_progress)
        if accuracy and outcome.status == "ok":
            outcome.measured.update(accuracy)
    except Exception as exc:  # the parent's own failure still leaves a row
        outcome = CellOutcome(status="error", error=one_line(exc))
    row = build_row(cell, run_id, outcome, started_at, _utcnow())
    _write(row, results_dir, log_path)
    if outcome.terminated is not None:  # the row is written: now end as the signal asked
        raise outcome.terminated
    return row


# What the accuracy stage adds to a row: the accuracy columns and the device's peak while
# evaluating; the rest (memory, speed, quality) stays the first stage's.
ACCURACY_STAGE_FIELDS = frozenset(
    {*(f.name for f in dataclasses.fields(ResultRow) if f.metadata["group"] == "accuracy"),
     "peak_device_eval_bytes"} - {"accuracy_key"})


def _complete_accuracy(cell: Cell, run_id: str, results_dir: str, previous: dict[str, Any],
                       on_phase: PhaseCallback, log_path: Optional[str],
                       on_progress: Optional[ProgressCallback]) -> ResultRow:
    """The accuracy stage of a row the first stage left pending: taken over from a cell of
    this run with the same accuracy, or evaluated on the model loaded again; the row keeps
    every figure it had, and a failure here is its status, named by phase."""
    cfg = cell.config
    row = ResultRow(**{k: v for k, v in previous.items() if k in COLUMNS})
    try:
        accuracy = reusable_accuracy(cfg, results_dir, run_id)
        if accuracy:
            outcome = CellOutcome(status="ok", measured=accuracy)
        else:
            outcome = measure_in_children(cfg, on_phase, log_path, "accuracy", on_progress)
    except Exception as exc:  # the parent's own failure still leaves a row
        outcome = CellOutcome(status="error", error=one_line(exc), last_phase="eval")
    fields = {k: v for k, v in outcome.measured.items() if k in ACCURACY_STAGE_FIELDS}
    phases = map_column(previous, "phase_s")
    phases.update({(name if name == "eval" else f"accuracy_{name}"): seconds
                   for name, seconds in outcome.phases.items()})
    changes: dict[str, Any] = {**fields, "phase_s": phases, "finished_at": _utcnow(),
                               "accuracy_pending": False}
    if outcome.status != "ok":
        changes.update(status=outcome.status,
                       error=f"accuracy stage: {outcome.error}",
                       failed_phase=outcome.measured.get("failed_phase", "eval"),
                       error_detail=outcome.measured.get("error_detail"))
    row = scrub_row(dataclasses.replace(row, **changes), scrubber([cfg]))
    _write(row, results_dir, log_path)
    if outcome.terminated is not None:
        raise outcome.terminated
    return row


def _write(row: ResultRow, results_dir: str, log_path: Optional[str]) -> None:
    """The row, whole: a terminating signal waits until it is written."""
    with deferred_termination():
        try:
            write_row(row, results_dir)
        except OSError as exc:  # a full disk, a results dir that went away: keep the row
            keep_unsaved(row, exc, log_path)
