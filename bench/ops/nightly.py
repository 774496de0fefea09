"""`python -m bench.ops.nightly`: one night of measurement — sweep, report, publish.

Schedulers call ``deploy/nightly.sh`` (lock, update, then this module); this module is the
night itself, so that the order of steps and the exit code live in one tested place.

Flags (each defaults to the environment variable beside it; an empty variable counts as
unset):

  --run-id ID            BENCH_RUN_ID            today's local date, YYYY-MM-DD
  --sweep-args ARGS      BENCH_SWEEP_ARGS        "+sweep=default" (shell-split into overrides)
  --results-dir DIR      BENCH_RESULTS_DIR       <repo>/results
  --reports-dir DIR      BENCH_REPORTS_DIR       <repo>/reports
  --state-dir DIR        BENCH_STATE_DIR         ~/.local/state/bench
  --publish-git REMOTE   BENCH_PUBLISH_GIT       unset: no git publishing
  --publish-branch NAME  BENCH_PUBLISH_BRANCH    reports
  --publish-dir DIR      BENCH_PUBLISH_DIR       unset: no directory publishing
  --publish-author-name  BENCH_PUBLISH_AUTHOR_NAME   bench nightly
  --publish-author-email BENCH_PUBLISH_AUTHOR_EMAIL  bench-nightly@localhost
  --allow-busy-gpu       BENCH_ALLOW_BUSY_GPU    unset: refuse a GPU others are using

A night:

0. Check the machine (bench.ops.doctor, one line per check). A problem (torch cannot use the
   GPU, no disk, ...) or a GPU that other processes are using refuses the night in one line
   (exit 2): its figures would be wrong or shared. --allow-busy-gpu measures anyway; the
   rows then record the other processes and the report flags them.
1. Resume. ``<state>/current-run`` holds the run id being measured; it is written before
   a sweep starts and removed once the sweep process has exited (successfully or not). If
   it is there at start, the previous night was interrupted (reboot, kill): that run id is
   swept again first — the same run_id measures only its missing cells — and then
   tonight's run id, when it differs. Both happen in this one invocation, so no night is
   lost to a reboot. A sweep killed by a signal keeps its marker and ends the sweeping.
2. Sweep: ``python -m bench <sweep args> run_id=<id> report=false results_dir=<abs>``.
3. Report: ``python -m bench.report results_dir=… reports_dir=… --fail-on-regression``,
   even when a sweep failed, so whatever did finish is reported.
4. Publish reports/ (dot-files excluded) to a git branch and/or mirror it into a
   directory; one line says what changed, or "no change".

Exit status: 0 when every sweep and the report succeeded; 1 when a sweep failed or
publishing failed; otherwise the report's own status (1 = regressions found, printed one per
line; 2 = bad input). Publishing happens before exiting either way, so a regression is
visible in the published report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bench.core.atomic import copy_file, write_text
from bench.core.errors import BenchInputError
from bench.core.paths import REPO, name_problem
from bench.core.secrets import Scrubber, args_scrubber
from bench.results.outputs import check_writable_dir

CURRENT_RUN = "current-run"
PUBLISH_CLONE = "publish"
DEFAULT_SWEEP_ARGS = "+sweep=default"
# Overrides the nightly sets itself; a second value in the sweep args would be ambiguous.
_RESERVED = ("run_id", "results_dir", "report")
_PREFIX = "bench.ops.nightly:"


# What the night's output must not show: any URL's credentials (a publish remote's token),
# the hub token, the values of the sweep's engine.server_env (main() sets it from the args)
_SCRUBBER = Scrubber([os.environ.get("HF_TOKEN")])


def say(message: str) -> None:
    """One line on stdout, flushed so it stays in order with the children's output."""
    print(f"{_PREFIX} {redact(message)}", flush=True)


def redact(text: str) -> str:
    """A publish URL may carry a token (https://user:token@host/...), a sweep a server's
    secrets: keep them out of logs."""
    return _SCRUBBER.scrub(text)


def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    """An environment default; empty counts as unset (EnvironmentFile and CI vars)."""
    return os.environ.get(name) or default


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Flags over environment over defaults: schedulers configure through the environment."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ops.nightly",
        description="One night: resume an interrupted run, sweep, report, publish.")
    add = parser.add_argument
    add("--run-id", default=_env("BENCH_RUN_ID", dt.date.today().isoformat()),
        help="run id of tonight's sweep (env BENCH_RUN_ID; default: today's date)")
    add("--sweep-args", default=_env("BENCH_SWEEP_ARGS", DEFAULT_SWEEP_ARGS),
        help="overrides for `python -m bench`, shell-split (env BENCH_SWEEP_ARGS)")
    add("--results-dir", type=Path, default=_env("BENCH_RESULTS_DIR", str(REPO / "results")),
        help="Parquet rows (env BENCH_RESULTS_DIR)")
    add("--reports-dir", type=Path, default=_env("BENCH_REPORTS_DIR", str(REPO / "reports")),
        help="generated report (env BENCH_REPORTS_DIR)")
    add("--state-dir", type=Path,
        default=_env("BENCH_STATE_DIR", str(Path.home() / ".local" / "state" / "bench")),
        help="current-run marker and the publish clone (env BENCH_STATE_DIR)")
    add("--publish-git", default=_env("BENCH_PUBLISH_GIT"),
        help="git remote to push reports/ to (env BENCH_PUBLISH_GIT)")
    add("--publish-branch", default=_env("BENCH_PUBLISH_BRANCH", "reports"),
        help="branch of --publish-git (env BENCH_PUBLISH_BRANCH)")
    add("--publish-dir", type=Path, default=_env("BENCH_PUBLISH_DIR"),
        help="directory to mirror reports/ into (env BENCH_PUBLISH_DIR)")
    add("--publish-author-name", default=_env("BENCH_PUBLISH_AUTHOR_NAME", "bench nightly"),
        help="git identity of the publish commit (env BENCH_PUBLISH_AUTHOR_NAME)")
    add("--publish-author-email",
        default=_env("BENCH_PUBLISH_AUTHOR_EMAIL", "bench-nightly@localhost"),
        help="git identity of the publish commit (env BENCH_PUBLISH_AUTHOR_EMAIL)")
    add("--allow-busy-gpu", action="store_true", default=bool(_env("BENCH_ALLOW_BUSY_GPU")),
        help="measure even when other processes use the GPU (env BENCH_ALLOW_BUSY_GPU)")
    return parser.parse_args(argv)


def check_inputs(args: argparse.Namespace) -> None:
    """Bad flags are one line before anything is written (no marker, no folder)."""
    problem = name_problem(args.run_id)
    if problem is not None:
        raise BenchInputError(f"--run-id={args.run_id!r} {problem}")
    for key in ("state_dir", "results_dir", "reports_dir"):
        check_writable_dir(f"--{key.replace('_', '-')}", getattr(args, key))


def machine_refusal(args: argparse.Namespace) -> Optional[str]:
    """Why tonight cannot be measured on this machine (bench.ops.doctor), or None."""
    from bench.ops import doctor

    cache = Path(os.environ.get("BENCH_CACHE") or "~/.cache/bench").expanduser()
    found = doctor.checks(args.results_dir, cache)
    for check in found:
        say(f"doctor: {check.line()}")
    problem = next((c for c in found if c.level == doctor.PROBLEM), None)
    if problem is not None:
        return f"the machine has a problem: {problem.text} (fix: {problem.fix})"
    busy = doctor.busy_gpu(found)
    if busy is not None and not args.allow_busy_gpu:
        return f"{busy.text}; --allow-busy-gpu measures anyway"
    return None


# --- resume -------------------------------------------------------------------------------

def interrupted_run(state_dir: Path) -> Optional[str]:
    """The run id a previous nightly was measuring when it died, if any."""
    marker = state_dir / CURRENT_RUN
    if not marker.is_file():
        return None
    return marker.read_text(encoding="utf-8").strip() or None


def runs_tonight(state_dir: Path, run_id: str) -> list[str]:
    """The interrupted run first (its missing cells), then tonight's."""
    pending = interrupted_run(state_dir)
    if pending is None or pending == run_id:
        return [run_id]
    return [pending, run_id]


def mark_current(state_dir: Path, run_id: Optional[str]) -> None:
    """Write (or with None remove) the marker atomically: a reboot must not leave half."""
    marker = state_dir / CURRENT_RUN
    if run_id is None:
        marker.unlink(missing_ok=True)
        return
    write_text(marker, run_id + "\n")


# --- sweep and report ---------------------------------------------------------------------

def sweep_overrides(sweep_args: str) -> list[str]:
    """The user's overrides; the ones the nightly sets itself are refused, not overridden."""
    args = shlex.split(sweep_args)
    for arg in args:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in _RESERVED:
            raise ValueError(f"sweep args must not set {key}= (the nightly sets "
                             f"{', '.join(_RESERVED)}); use --run-id / --results-dir")
    return args


def run_module(module: str, args: Sequence[str]) -> int:
    """A bench command in a child with inherited stdio; the child's status, or -signal."""
    cmd = [sys.executable, "-m", module, *args]
    say("$ " + shlex.join(["python", "-m", module, *args]))
    return subprocess.run(cmd, cwd=REPO, check=False).returncode


def sweep(run_id: str, overrides: Sequence[str], results_dir: Path, state_dir: Path) -> int:
    """Measure one run id; the marker stays behind only when the sweep was interrupted."""
    mark_current(state_dir, run_id)
    code = run_module("bench", [*overrides, f"run_id={run_id}", "report=false",
                                f"results_dir={results_dir}"])
    if code >= 0:  # exited (successfully or not); a signal means interrupted: resume later
        mark_current(state_dir, None)
    return code


def report(results_dir: Path, reports_dir: Path) -> int:
    """The whole report from every row; its status says whether a cell regressed."""
    return run_module("bench.report", [f"results_dir={results_dir}",
                                       f"reports_dir={reports_dir}", "--fail-on-regression"])


def count_rows(results_dir: Path, run_id: Optional[str] = None) -> int:
    """Rows (one finished file each) of one run, or of every run."""
    from bench.results.store import result_files  # pyarrow only when counting

    root = results_dir / run_id if run_id else results_dir
    return len(result_files(root)) if root.is_dir() else 0


# --- publish ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Changes:
    copied: list[str]
    removed: list[str]

    def __bool__(self) -> bool:
        return bool(self.copied or self.removed)

    def summary(self) -> str:
        return f"{len(self.copied)} files written, {len(self.removed)} removed"


def _visible(root: Path) -> set[str]:
    """Relative paths of the files under root; dot-files and dot-dirs (.git, .gitkeep) are not
    report content, and are neither copied nor removed."""
    out = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.add(rel.as_posix())
    return out


def _copy_atomic(src: Path, dst: Path) -> None:
    """Readers of the published directory never see a half-written file."""
    copy_file(src, dst)


def _prune_empty_dirs(root: Path) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        rel = path.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts) and not any(path.iterdir()):
            path.rmdir()


def mirror(src: Path, dst: Path) -> Changes:
    """Make dst hold exactly src's files; unchanged files are left alone (mtimes kept)."""
    dst.mkdir(parents=True, exist_ok=True)
    want, have = _visible(src), _visible(dst)
    removed = sorted(have - want)
    for rel in removed:
        (dst / rel).unlink()
    copied = [rel for rel in sorted(want)
              if rel not in have or not filecmp.cmp(src / rel, dst / rel, shallow=False)]
    for rel in copied:
        _copy_atomic(src / rel, dst / rel)
    _prune_empty_dirs(dst)
    return Changes(copied, removed)


class PublishError(RuntimeError):
    """A git step of publishing failed; the night reports it and exits 1."""


def git(clone: Path, *args: str, identity: Sequence[str] = ()) -> str:
    """A git command in the publish clone; its stderr in the error when it fails."""
    proc = subprocess.run(["git", *identity, "-C", str(clone), *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise PublishError(redact(f"git {' '.join(args)}: {detail}"))
    return proc.stdout


def checkout_remote_branch(clone: Path, remote: str, branch: str) -> None:
    """The clone at the remote branch exactly (or at an empty new branch if it has none)."""
    if not (clone / ".git").is_dir():
        clone.mkdir(parents=True, exist_ok=True)
        git(clone, "init", "-q")
        git(clone, "remote", "add", "origin", remote)
    git(clone, "remote", "set-url", "origin", remote)  # the configured remote may change
    ref = f"refs/heads/{branch}"
    tracking = f"refs/remotes/origin/{branch}"
    git(clone, "symbolic-ref", "HEAD", ref)
    if git(clone, "ls-remote", "--heads", "origin", ref).strip():
        git(clone, "fetch", "-q", "origin", f"+{ref}:{tracking}")
        git(clone, "reset", "-q", "--hard", tracking)
    else:  # a new, empty remote (or a new branch): start the branch from nothing
        git(clone, "update-ref", "-d", ref)
        git(clone, "read-tree", "--empty")
    git(clone, "clean", "-q", "-ffdx")


def publish_git(reports_dir: Path, state_dir: Path, remote: str, branch: str,
                message: str, identity: Sequence[str]) -> str:
    """Commit reports/ onto the branch and push, only when a file changed."""
    clone = state_dir / PUBLISH_CLONE
    checkout_remote_branch(clone, remote, branch)
    mirror(reports_dir, clone)
    git(clone, "add", "-A")
    if not git(clone, "status", "--porcelain").strip():
        return f"git {redact(remote)} {branch}: no change"
    git(clone, "commit", "-q", "--no-verify", "-m", message, identity=identity)
    git(clone, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
    sha = git(clone, "rev-parse", "--short", "HEAD").strip()
    return f"git {redact(remote)} {branch}: pushed {sha} ({message})"


def publish_dir(reports_dir: Path, target: Path) -> str:
    """Mirror into a directory (a web root), for boxes that publish without git."""
    changes = mirror(reports_dir, target)
    return f"dir {target}: {changes.summary()}" if changes else f"dir {target}: no change"


def commit_message(run_ids: Sequence[str], results_dir: Path) -> str:
    """`bench nightly <run_id>` with the rows measured under it and in all."""
    counts = " + ".join(str(count_rows(results_dir, rid)) for rid in run_ids)
    return (f"bench nightly {', '.join(run_ids)}: {counts} rows "
            f"({count_rows(results_dir)} in results)")


def publish(args: argparse.Namespace, run_ids: Sequence[str]) -> bool:
    """Every configured target; False when one failed (the others still run)."""
    if not (args.publish_git or args.publish_dir):
        return True
    if not args.reports_dir.is_dir():
        say(f"nothing to publish: {args.reports_dir} does not exist")
        return False
    ok = True
    if args.publish_git:
        identity = ["-c", f"user.name={args.publish_author_name}",
                    "-c", f"user.email={args.publish_author_email}",
                    "-c", "commit.gpgsign=false"]
        try:
            say("published " + publish_git(args.reports_dir, args.state_dir,
                                           args.publish_git, args.publish_branch,
                                           commit_message(run_ids, args.results_dir),
                                           identity))
        except PublishError as exc:
            say(f"publish failed: {exc}")
            ok = False
    if args.publish_dir:
        try:
            say("published " + publish_dir(args.reports_dir, args.publish_dir))
        except OSError as exc:
            say(f"publish failed: {exc}")
            ok = False
    return ok


# --- the night ----------------------------------------------------------------------------

def exit_status(sweeps_ok: bool, report_code: int, published: bool) -> int:
    """1 for a failed sweep or publish; else the report's status (1 = regressions)."""
    if not sweeps_ok or not published or report_code < 0:
        return 1
    return report_code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Sweep(s), report, publish; publishing happens whatever the earlier steps returned."""
    global _SCRUBBER
    args = parse_args(argv)
    for name in ("results_dir", "reports_dir", "state_dir"):
        setattr(args, name, getattr(args, name).expanduser().resolve())
    if args.publish_dir:
        args.publish_dir = args.publish_dir.expanduser().resolve()
    try:
        overrides = sweep_overrides(args.sweep_args)
        _SCRUBBER = args_scrubber(overrides)
        check_inputs(args)
    except (ValueError, BenchInputError) as exc:
        print(f"bench.ops.nightly: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    refusal = machine_refusal(args)
    if refusal is not None:
        print(f"bench.ops.nightly: error: {refusal}", file=sys.stderr)
        return 2
    run_ids = runs_tonight(args.state_dir, args.run_id)
    if run_ids[0] != args.run_id:
        say(f"resuming interrupted run {run_ids[0]} first, then {args.run_id}")
    failed = []
    for run_id in run_ids:
        code = sweep(run_id, overrides, args.results_dir, args.state_dir)
        if code != 0:
            failed.append(run_id)
            say(f"sweep {run_id} failed (exit {code}); reporting what finished")
        if code < 0:  # killed: its marker must survive for the next invocation to resume
            break
    report_code = report(args.results_dir, args.reports_dir)
    published = publish(args, run_ids)
    status = exit_status(not failed, report_code, published)
    swept = f"failed: {', '.join(failed)}" if failed else "ok"
    say(f"done: runs {', '.join(run_ids)}; sweep {swept}; report exit {report_code}"
        f"{' (regressions)' if report_code == 1 else ''}; "
        f"publish {'ok' if published else 'failed'}; exit {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
