"""The nightly end to end: kill, resume, sweep, report, publish to git and a directory, lock.

Real sweeps of the tiny model (two cells), a local bare repository as the publish remote,
and deploy/nightly.sh itself; results, reports and state live in tmp directories.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.ops import nightly
from tests.conftest import FAST, REPO

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves these out

SCRIPT = REPO / "deploy" / "nightly.sh"
QUANTS = "quant=fp32,bnb-nf4"


def sweep_args(tmp: Path) -> str:
    """A two-cell sweep; Hydra's job logs go to tmp, not to the checkout's outputs/."""
    return " ".join(["+sweep=default", "model=tiny-llama", QUANTS, "eval=none", *FAST,
                     f"hydra.sweep.dir={tmp}/outputs/${{run_id}}"])


def clean_env(cache: Path, **extra: str) -> dict[str, str]:
    """The test's environment without the developer's own BENCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    return {**env, "BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            **extra}


class Box:
    """One machine's nightly setup under tmp: dirs, a bare publish remote, a web dir."""

    def __init__(self, tmp: Path, cache: Path) -> None:
        self.tmp, self.cache = tmp, cache
        self.results, self.reports = tmp / "results", tmp / "reports"
        self.state, self.www = tmp / "state", tmp / "www"
        self.remote = tmp / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", str(self.remote)], check=True)

    def flags(self, run_id: str) -> list[str]:
        return ["--run-id", run_id, "--sweep-args", sweep_args(self.tmp),
                "--results-dir", str(self.results), "--reports-dir", str(self.reports),
                "--state-dir", str(self.state), "--publish-git", str(self.remote),
                "--publish-dir", str(self.www)]

    def night(self, run_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bench.ops.nightly", *self.flags(run_id)],
                              cwd=REPO, env=clean_env(self.cache), capture_output=True,
                              text=True, timeout=600)

    def script_env(self, run_id: str) -> dict[str, str]:
        """nightly.sh configured through the environment, as systemd and cron do."""
        return clean_env(self.cache, BENCH_UPDATE="0", BENCH_RUN_ID=run_id,
                         BENCH_SWEEP_ARGS=sweep_args(self.tmp),
                         BENCH_RESULTS_DIR=str(self.results),
                         BENCH_REPORTS_DIR=str(self.reports), BENCH_STATE_DIR=str(self.state),
                         BENCH_PUBLISH_GIT=str(self.remote), BENCH_PUBLISH_DIR=str(self.www))

    def rows(self, run_id: str) -> dict[str, int]:
        """Row file -> mtime: a cell measured again would get a new file."""
        return {p.name: p.stat().st_mtime_ns
                for p in (self.results / run_id).glob("*.parquet")}

    def commits(self) -> list[str]:
        proc = subprocess.run(["git", "--git-dir", str(self.remote), "log", "--format=%s",
                               "reports"], capture_output=True, text=True, check=False)
        return proc.stdout.splitlines() if proc.returncode == 0 else []

    def published_tree(self) -> set[str]:
        out = subprocess.run(["git", "--git-dir", str(self.remote), "ls-tree", "-r",
                              "--name-only", "reports"], capture_output=True, text=True,
                             check=True).stdout
        return set(out.splitlines())


def report_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def expected_exit(proc: subprocess.CompletedProcess[str]) -> int:
    """0, or 1 when the report found a regression (timing noise between two real nights on a
    shared 2-core machine can exceed the threshold); never a failed sweep or publish."""
    assert "sweep failed" not in proc.stdout and "publish failed" not in proc.stdout
    return 1 if "regression:" in proc.stdout else 0


def kill_after_first_row(box: Box, run_id: str) -> None:
    """Start a night and kill it (the whole process group, cells included) like a reboot."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.ops.nightly", *box.flags(run_id)],
                            cwd=REPO, env=clean_env(box.cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while not box.rows(run_id):
        assert proc.poll() is None, "the night ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_the_sweep_args_plan_two_cells(tmp_path: Path, cache_dir: Path) -> None:
    """The command-line quant list replaces the default sweep's four schemes."""
    proc = subprocess.run([sys.executable, "-m", "bench", *sweep_args(tmp_path).split(),
                           "dry_run=true", f"results_dir={tmp_path / 'results'}"],
                          cwd=REPO, env=clean_env(cache_dir), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("2 cells")
    assert "quant=fp32" in proc.stdout and "quant=bnb-nf4" in proc.stdout


def test_interrupted_night_resumes_then_publishes_once(tmp_path: Path, cache_dir: Path) -> None:
    box = Box(tmp_path, cache_dir)
    box.www.mkdir()
    (box.www / "stale.md").write_text("from an older report\n")
    (box.www / ".htaccess").write_text("# the web server's, not the report's\n")

    # Night 1 dies (reboot, kill) after its first cell: the marker says which run it was.
    kill_after_first_row(box, "2026-01-01")
    survivors = box.rows("2026-01-01")
    assert len(survivors) == 1
    assert (box.state / "current-run").read_text().strip() == "2026-01-01"
    assert box.commits() == []  # nothing published from half a night

    # Night 2 finishes night 1's missing cell first (its row is kept), then measures its own.
    proc = box.night("2026-01-02")
    assert proc.returncode == expected_exit(proc), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming interrupted run 2026-01-01 first, then 2026-01-02" in proc.stdout
    assert proc.stderr.count("already in this run, skipped") == 1
    night1 = box.rows("2026-01-01")
    assert len(night1) == 2 and all(night1[n] == t for n, t in survivors.items())
    assert len(box.rows("2026-01-02")) == 2
    assert not (box.state / "current-run").exists()

    # One commit (the branch created in the empty remote), holding exactly the report.
    assert box.commits() == ["bench nightly 2026-01-01, 2026-01-02: 2 + 2 rows (4 in results)"]
    tree = box.published_tree()
    assert {"README.md", "compatibility.md", "history.md", "regressions.md"} <= tree
    assert tree == report_files(box.reports) - {".gitkeep"}
    # The history has both nights of each cell.
    history = (box.reports / "history.md").read_text()
    assert history.count("2026-01-01 → 2026-01-02") == 2
    # The web directory mirrors the report: stale file gone, dot-files left alone.
    assert report_files(box.www) == tree | {".htaccess"}
    assert all((box.www / f).read_bytes() == (box.reports / f).read_bytes() for f in tree)
    assert "dir " + str(box.www) in proc.stdout and "files written, 1 removed" in proc.stdout

    # The same night again, through deploy/nightly.sh from elsewhere: nothing is measured,
    # the report comes out byte-identical, and nothing is published.
    before = {rid: box.rows(rid) for rid in ("2026-01-01", "2026-01-02")}
    again = subprocess.run([str(SCRIPT)], cwd=tmp_path, env=box.script_env("2026-01-02"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == expected_exit(again), again.stdout[-3000:] + again.stderr
    assert again.stderr.count("already in this run, skipped") == 2
    assert {rid: box.rows(rid) for rid in before} == before
    assert len(box.commits()) == 1
    assert f"git {box.remote} reports: no change" in again.stdout
    assert f"dir {box.www}: no change" in again.stdout

    # Someone pushes a stray file to the branch: the next night resets to the remote,
    # removes it (the branch holds the report and nothing else) and pushes a fast-forward.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", "-b", "reports", str(box.remote), str(other)],
                   check=True)
    (other / "notes.md").write_text("hand-written\n")
    ident = ["-c", "user.name=someone", "-c", "user.email=someone@example.org"]
    subprocess.run(["git", *ident, "-C", str(other), "add", "notes.md"], check=True)
    subprocess.run(["git", *ident, "-C", str(other), "commit", "-qm", "notes"], check=True)
    subprocess.run(["git", "-C", str(other), "push", "-q", "origin", "reports"], check=True)
    third = box.night("2026-01-02")
    assert third.returncode == expected_exit(third), third.stdout[-3000:]
    assert box.commits()[:2] == ["bench nightly 2026-01-02: 2 rows (4 in results)", "notes"]
    assert box.published_tree() == tree


def test_a_held_lock_makes_the_script_exit_quietly(tmp_path: Path, cache_dir: Path) -> None:
    box = Box(tmp_path, cache_dir)
    box.state.mkdir()
    lock = box.state / "nightly.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        proc = subprocess.run([str(SCRIPT)], cwd=tmp_path, env=box.script_env("2026-01-01"),
                              capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"another nightly run holds {lock}"
    assert elapsed < 10
    assert not box.results.exists() and not (box.state / "current-run").exists()
    assert box.commits() == []


def test_a_failed_sweep_still_reports_and_publishes(tmp_path: Path, cache_dir: Path) -> None:
    """Bad sweep input fails the night (exit 1) after the report and the publish ran."""
    box = Box(tmp_path, cache_dir)
    args = box.flags("2026-01-01")
    args[args.index("--sweep-args") + 1] = "+sweep=default quant=nope"
    proc = subprocess.run([sys.executable, "-m", "bench.ops.nightly", *args], cwd=REPO,
                          env=clean_env(cache_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "quant=nope is not a known choice" in proc.stderr
    assert "sweep 2026-01-01 failed (exit 2)" in proc.stdout
    assert "No results yet" in (box.www / "README.md").read_text()
    assert box.commits() == ["bench nightly 2026-01-01: 0 rows (0 in results)"]
    # the sweep exited on its own: nothing to resume tomorrow
    assert not (box.state / "current-run").exists()


@pytest.mark.parametrize("arg", ["run_id=x", "results_dir=/tmp", "report=true"])
def test_sweep_args_may_not_set_what_the_nightly_sets(tmp_path: Path, arg: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = nightly.main(["--sweep-args", f"+sweep=default {arg}",
                         "--state-dir", str(tmp_path / "state"),
                         "--results-dir", str(tmp_path / "results")])
    assert code == 2
    assert f"must not set {arg.split('=')[0]}=" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_runs_tonight_puts_the_interrupted_run_first(tmp_path: Path) -> None:
    assert nightly.runs_tonight(tmp_path, "2026-01-02") == ["2026-01-02"]
    nightly.mark_current(tmp_path, "2026-01-01")
    assert nightly.runs_tonight(tmp_path, "2026-01-02") == ["2026-01-01", "2026-01-02"]
    assert nightly.runs_tonight(tmp_path, "2026-01-01") == ["2026-01-01"]
    nightly.mark_current(tmp_path, None)
    assert nightly.runs_tonight(tmp_path, "2026-01-02") == ["2026-01-02"]


def test_mirror_replaces_content_and_keeps_dot_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "reports", tmp_path / "www"
    (src / "figures").mkdir(parents=True)
    (src / "README.md").write_text("new\n")
    (src / "figures" / "a.png").write_bytes(b"png")
    (src / ".gitkeep").write_text("")
    (dst / "figures" / "old").mkdir(parents=True)
    (dst / "README.md").write_text("old\n")
    (dst / "figures" / "old" / "b.png").write_bytes(b"old png")
    (dst / ".git").mkdir()
    (dst / ".git" / "HEAD").write_text("ref: refs/heads/reports\n")
    changes = nightly.mirror(src, dst)
    assert changes.copied == ["README.md", "figures/a.png"]
    assert changes.removed == ["figures/old/b.png"]
    assert report_files(dst) == {"README.md", "figures/a.png", ".git/HEAD"}
    assert not (dst / "figures" / "old").exists()
    mtime = (dst / "README.md").stat().st_mtime_ns
    assert not nightly.mirror(src, dst)  # unchanged: nothing copied, mtimes kept
    assert (dst / "README.md").stat().st_mtime_ns == mtime
