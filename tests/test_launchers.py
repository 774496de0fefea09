"""Scale-out through Hydra's launchers: real submitit jobs, and Slurm up to its sbatch.

`hydra/launcher=submitit_local` runs the same plugin code as Slurm: the launcher and the
task function are pickled, and each cell runs as its own `python -m submitit.core._submit`
process. A sweep that lands every planned row through it shows that run_id, the absolute
results_dir and the plan size survive the trip into a job. Slurm cannot run here, so its
`sbatch` is a stand-in that keeps the script submitit wrote and refuses it: the preset is
checked as Slurm would read it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.sweep.cells import Cell
from bench.sweep.plan import make_plan, with_default_sweep
from bench.weights.tiny import ensure_tiny_model
from tests.conftest import FAST, run_bench

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves these out

pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                    reason="the launchers need the cluster extra: pip install -e .[cluster]")

SWEEP = ["-m", *FAST, "model=tiny-llama", "quant=fp32,bf16", "eval=none"]


@pytest.fixture(scope="module")
def plan() -> list[Cell]:
    """The cells `python -m bench` plans for SWEEP (what every launcher must deliver)."""
    return make_plan(with_default_sweep([a for a in SWEEP if not a.startswith("-")]))


@pytest.fixture(scope="module")
def tiny_model(plan: list[Cell], cache_dir: Path) -> Path:
    """Built once, here: parallel jobs finding no model would each build their own."""
    return ensure_tiny_model(plan[0].config.model, cache_dir)


def _job_logs(submitit_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(submitit_dir.glob("*/*_log.err")))


def test_submitit_local_sweep_lands_every_planned_row_and_resumes(
        tmp_path: Path, cache_dir: Path, plan: list[Cell], tiny_model: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = [*SWEEP, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
            "run_id=launch1", f"results_dir={results}", f"reports_dir={reports}"]
    proc = run_bench(*args, "report=false", cwd=tmp_path, cache=cache_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    planned = {cell.cell_id for cell in plan}
    n = len(planned)
    run_dir = results / "launch1"
    assert {p.stem for p in run_dir.glob("*.parquet")} == planned  # one file per cell
    df = pd.read_parquet(results)
    assert len(df) == n
    assert (df.status == "ok").all(), df[["quant", "status", "error"]]
    assert (df.run_id == "launch1").all() and (df.decode_tok_s > 0).all()
    # each cell ran as its own submitit job; the plan size reached it (hydra.job.env_set)
    submitit_dir = tmp_path / "outputs" / "launch1" / ".submitit"
    assert len(list(submitit_dir.glob("*/*_result.pkl"))) == n
    logs = _job_logs(submitit_dir)
    for i in range(1, n + 1):
        assert f"[{i}/{n}] tiny-llama" in logs, logs[-2000:]
    for cell_id in planned:  # the cell's own log, under hydra.sweep.dir
        assert list((tmp_path / "outputs" / "launch1").glob(f"*/cell-{cell_id}.log"))

    # a lost job: the same command again measures only the missing cell, then reports
    lost, *kept = sorted(run_dir.glob("*.parquet"))
    kept_mtimes = [p.stat().st_mtime_ns for p in kept]
    lost.unlink()
    proc = run_bench(*args, cwd=tmp_path, cache=cache_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.stem for p in run_dir.glob("*.parquet")} == planned
    assert [p.stat().st_mtime_ns for p in kept] == kept_mtimes  # not measured again
    assert _job_logs(submitit_dir).count("already in this run, skipped") == n - 1
    assert (reports / "README.md").exists()  # once, in the submitting process


def test_slurm_preset_takes_env_and_command_line_values(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_SLURM_PARTITION", "a100")
    proc = run_bench("hydra/launcher=slurm", "hydra.launcher.timeout_min=120",
                     "--cfg", "all", "--resolve", "-p", "hydra.launcher",
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "a100"  # environment
    assert launcher["timeout_min"] == 120  # command line
    assert (launcher["gpus_per_node"], launcher["cpus_per_task"], launcher["mem_gb"]) == (1, 8, 64)

    # the plugin's own config is still there, untouched by the preset
    proc = run_bench("hydra/launcher=submitit_slurm", "--cfg", "all", "--resolve", "-p",
                     "hydra.launcher", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert yaml.safe_load(proc.stdout)["partition"] is None


def test_slurm_sweep_submits_one_array_task_per_cell(
        tmp_path: Path, cache_dir: Path, plan: list[Cell],
        monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    captured = tmp_path / "sbatch.sh"
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\necho "sbatch: no Slurm here (stand-in)" >&2\n'
        "exit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks it exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_CAPTURE", str(captured))
    results = tmp_path / "results"

    proc = run_bench(*SWEEP, "hydra/launcher=slurm", "hydra.launcher.partition=h100",
                     "run_id=slurm1", f"results_dir={results}", "report=false",
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode != 0 and "stand-in" in proc.stderr, proc.stderr[-3000:]
    script = captured.read_text()
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.MULTILINE))
    n = len(plan)
    assert sbatch["array"] == f"0-{n - 1}%{n}"  # one array task per planned cell
    assert sbatch["partition"] == "h100" and sbatch["gpus-per-node"] == "1"
    assert (sbatch["time"], sbatch["cpus-per-task"], sbatch["mem"]) == ("60", "8", "64GB")
    assert sbatch["job-name"] == "bench"
    # logs under hydra.sweep.dir, as an absolute path the compute nodes can open
    assert sbatch["output"].startswith(str(tmp_path / "outputs" / "slurm1" / ".submitit"))
    assert "-m submitit.core._submit" in script
    assert not list(results.rglob("*.parquet"))  # nothing ran
