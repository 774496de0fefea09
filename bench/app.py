"""`python -m bench`: plan and validate every cell, then let Hydra's launcher run them.

Hydra's sweeper and launchers (basic, joblib, submitit, ray) run one job per cell; each job
runs its cell in a child process (bench.sweep.runner). Before Hydra starts, the whole plan is
composed and validated here, so bad input costs one line and no work, `dry_run=true`
lists the cells, and all jobs share one run_id and one absolute results directory.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.core.errors import BenchInputError
from bench.core.paths import CONF_DIR
from bench.core.process import Terminated, end_as, raise_on_termination
from bench.core.secrets import ScrubbedStream, args_scrubber, scrubber
from bench.results.outputs import UNSAVED, check_writable_dir, resolved_dir
from bench.results.store import finished_statuses, remove_stale_temp_files, run_lock
from bench.sweep.cells import Cell
from bench.sweep.display import CellProgress
from bench.sweep.plan import (
    make_plan,
    new_run_id,
    register_configs,
    to_bench_config,
    with_default_sweep,
)
from bench.sweep.runner import run_cell
from bench.tasks import task_of

_PLAN_SIZE_ENV = "BENCH_PLAN_SIZE"
_STAGE_ENV = "BENCH_STAGE"  # bench.sweep.cell.STAGES; travels like the plan size
# Hydra flags that only print information: handed to Hydra untouched, no plan is made.
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
               "--shell-completion", "-sc", "--resolve", "--package", "-p"}
_SET_BY_APP = re.compile(r"^(run_id|results_dir)=")

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_job(cfg: DictConfig) -> None:
    """One Hydra job = one cell."""
    bench_cfg = to_bench_config(cfg)
    hc = HydraConfig.get()
    scrub = scrubber([bench_cfg])
    output_dir = Path(hc.runtime.output_dir)
    # Hydra has saved the job's config and overrides (a URL's password, a server's
    # environment): they leave the disk now, and the job's logs once the cell is done
    scrub.scrub_tree(output_dir)
    if hc.sweep.dir:
        scrub.scrub_file(Path(hc.sweep.dir) / "multirun.yaml")
    cell = Cell(bench_cfg, tuple(hc.overrides.task))
    index = (hc.job.num or 0) + 1 if hc.job.get("num") is not None else 1
    total = int(os.environ[_PLAN_SIZE_ENV]) if os.environ.get(_PLAN_SIZE_ENV) else None
    assert bench_cfg.run_id is not None  # main() always passes one
    log_path = str(Path(hc.runtime.output_dir) / f"cell-{cell.cell_id}.log")
    stage = os.environ.get(_STAGE_ENV) or "all"
    try:
        with CellProgress(cell, index, total, stage=stage) as progress:
            row = run_cell(cell, bench_cfg.run_id, bench_cfg.results_dir, progress.phase,
                           log_path, stage, progress.progress)
            if row is None:
                progress.skipped_existing()
            else:
                progress.result(row, log_path)
    finally:
        scrub.scrub_tree(output_dir)


def print_plan(cells: Sequence[Cell], run_id: Optional[str], results_dir: str) -> None:
    done = finished_statuses(results_dir, run_id) if run_id else {}
    print(f"{len(cells)} cells" + (f" (run_id={run_id})" if run_id else ""))
    for i, cell in enumerate(cells, 1):
        mark = f"  [{done[cell.cell_id]} in this run]" if cell.cell_id in done else ""
        print(f"{i:>4}  {cell.describe()}{mark}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.split("=")[0] in _INFO_FLAGS for a in args):
        hydra_job()
        return 0
    raise_on_termination()
    try:
        return _plan_and_sweep(args)
    except BenchInputError as exc:  # bad input: one line, exit 2
        print(f"bench: error: {args_scrubber(args).scrub(str(exc))}", file=sys.stderr)
        return 2
    except Terminated as exc:  # the running cell has its row (bench.sweep.runner)
        print(f"bench: terminated by {exc}; the cell that was running has its row (status "
              f"timeout, terminated_by={exc}); the same run_id measures it again",
              file=sys.stderr)
        end_as(exc)
        raise  # not reached: end_as ends the process


def _plan_and_sweep(args: list[str]) -> int:
    flags = [a for a in args if a.startswith("-")]
    overrides = with_default_sweep([a for a in args if not a.startswith("-")])
    cells = make_plan(overrides)
    first = cells[0].config
    results_dir = str(resolved_dir("results_dir", first.results_dir))
    if first.dry_run:
        print_plan(cells, first.run_id, results_dir)
        return 0
    # before any work: a place that cannot take the rows, the report or the cache is bad input
    check_writable_dir("results_dir", results_dir)
    if first.report:
        check_writable_dir("reports_dir", first.reports_dir)
    check_writable_dir("cache_dir", first.resolved_cache_dir)
    run_id = first.run_id or new_run_id()
    scrub = scrubber(c.config for c in cells)
    streams = sys.stdout, sys.stderr
    sys.stdout = ScrubbedStream(sys.stdout, scrub)  # type: ignore[assignment]
    sys.stderr = ScrubbedStream(sys.stderr, scrub)  # type: ignore[assignment]
    try:
        with run_lock(results_dir, run_id):
            return _sweep(cells, flags, overrides, run_id, results_dir)
    finally:
        sys.stdout, sys.stderr = streams


def accuracy_last(cells: Sequence[Cell]) -> bool:
    """Whether the sweep runs in two stages (config accuracy_last): more than one cell, and
    one of them evaluates accuracy, which takes minutes where speed, memory and quality take
    seconds; the first report then comes before any accuracy phase."""
    return (cells[0].config.accuracy_last and len(cells) > 1
            and any(c.config.eval.accuracy and c.config.resolved_weights != "synthetic"
                    and task_of(c.config).accuracy for c in cells))


def _sweep(cells: Sequence[Cell], flags: list[str], overrides: list[str], run_id: str,
           results_dir: str) -> int:
    """Run every cell through Hydra's launcher (the run's lock held), then the report; in
    two stages when accuracy comes last, each ending in the report."""
    first = cells[0].config
    for path in remove_stale_temp_files(results_dir, run_id):
        print(f"bench: removed {path}, left by a writer that was killed", file=sys.stderr)
    print(f"bench: run_id={run_id}, {len(cells)} cells, results in {results_dir}",
          file=sys.stderr)
    stages = (("measure", "stage 1 of 2: speed, memory and quality of every cell; accuracy "
                          "follows in stage 2, the report after each"),
              ("accuracy", "stage 2 of 2: accuracy of every cell, its model loaded again")
              ) if accuracy_last(cells) else (("all", None),)
    for stage, words in stages:
        if words:
            print(f"bench: {words}", file=sys.stderr)
        # n of "cell i of n" and the stage travel in the job's config (hydra.job.env_set),
        # not in this process's environment: a Ray cluster's workers do not inherit it.
        sys.argv = [sys.argv[0], *flags, *[o for o in overrides if not _SET_BY_APP.match(o)],
                    f"run_id={run_id}", f"results_dir={results_dir}",
                    f"++hydra.job.env_set.{_PLAN_SIZE_ENV}={len(cells)}",
                    f"++hydra.job.env_set.{_STAGE_ENV}={stage}"]
        hydra_job()
        if first.report:
            from bench.report import generate

            for path in generate(results_dir, first.reports_dir):
                print(f"bench: wrote {path}", file=sys.stderr)
    if UNSAVED:
        print(f"bench: error: {len(UNSAVED)} measured row(s) could not be written to "
              f"{results_dir}; kept in: {', '.join(map(str, UNSAVED))}", file=sys.stderr)
        return 1
    return 0
