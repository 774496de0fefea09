"""Run one untrusted Python program in isolation: bubblewrap namespaces plus rlimits.

Why: HumanEval scores model-written code by executing it, and that code may loop forever,
allocate without bound, fork-bomb, write files or open sockets. Each program runs in its own
process tree, under a throw-away uid (when we are root) so that RLIMIT_NPROC is enforced,
with a wall-clock deadline that kills the whole tree.

Isolation levels (recorded by callers in results rows):

- ``"bwrap"``: ``bwrap --unshare-user --uid U --gid U --disable-userns --unshare-pid
  --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup-try --die-with-parent
  --new-session`` over a root of only /usr (merged-/usr links), the dynamic linker's
  configuration and the interpreter's installation, read-only, ``--proc /proc --dev /dev
  --remount-ro /dev --size N --tmpfs /tmp --chdir /tmp --clearenv --setenv
  PATH/HOME/TMPDIR/LANG``, plus the rlimits below.
- ``"rlimits"`` (fallback when bwrap is missing or cannot create namespaces): rlimits, a
  fresh uid when root, a private temporary directory as cwd and a cleared environment; no
  filesystem or network isolation, so a loud warning is emitted.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ISOLATIONS = ("bwrap", "rlimits")
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Throw-away uids come from a range no distribution or subuid map hands out, so no real
# user shares the RLIMIT_NPROC count or can be signalled by the sandbox.
_UID_BASE = 0x5000_0000
_UID_SPAN = 0x1000_0000
_STDERR_TAIL_BYTES = 4096
_KILL_ROUNDS = 100


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits; defaults suit HumanEval (stdlib-only, tiny inputs)."""

    timeout_s: float = 10.0
    memory_bytes: int = 512 * 2**20  # RLIMIT_AS, per process
    nproc: int = 8  # RLIMIT_NPROC for the throw-away uid: bwrap's two processes + the program
    fsize_bytes: int = 16 * 2**20  # RLIMIT_FSIZE: largest file (stderr capture included)
    nofile: int = 256  # RLIMIT_NOFILE
    tmpfs_bytes: int = 64 * 2**20  # size of the private /tmp (bwrap only)

    @property
    def cpu_s(self) -> int:
        """CPU seconds: just above the wall deadline, a backstop for the deadline timer."""
        return math.ceil(self.timeout_s) + 1


# The program runs inside this driver (`python -I -S -c DRIVER FD`). Its stdin is a one-use
# token, a newline, then the program. Only after the whole program (the tests and the final
# `check(...)` included) returned normally does the driver write the token to the pipe FD,
# whose other end only bench holds, and exit. An exit status of 0 proves nothing: a
# completion can end the interpreter successfully before or instead of the tests
# (sys.exit(0), os._exit(0), exit(), an atexit or signal handler, exec of another program).
# The token is not in the program's text; code that deliberately reads the driver's own
# memory could still find it (that stays inside the sandbox): see docs/accuracy.md.
DRIVER = (
    "import os, sys\n"
    "def _bench_driver(fd):\n"
    "    token, _, program = sys.stdin.buffer.read().partition(b'\\n')\n"
    "    exec(compile(program, '<program>', 'exec'), {'__name__': '__main__'})\n"
    "    os.write(fd, token)\n"
    "    os._exit(0)\n"
    "_bench_driver(int(sys.argv[1]))\n"
)


@dataclass(frozen=True)
class RunResult:
    """Outcome of one program; ``status`` is ``passed`` (the driver's token came back after
    the program returned normally, and exit 0), ``failed`` or ``timeout``."""

    status: str
    returncode: int | None
    duration_s: float
    isolation: str
    uid: int
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def warn(message: str) -> None:
    """Warn loudly: through logging (for the run log) and on stderr (for a person watching)."""
    log.warning(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def warn_if_weak(isolation: str) -> None:
    """Say so whenever untrusted code is about to run without namespace isolation."""
    if isolation == "rlimits":
        warn(
            "running generated code WITHOUT bubblewrap: only rlimits, a throw-away uid (when "
            "root) and a temporary cwd protect this machine; the filesystem and network stay "
            "reachable. Install bubblewrap (apt-get install bubblewrap) for real isolation."
        )


# --- uids and process cleanup -------------------------------------------------------------


def _sandbox_ids() -> tuple[int, int]:
    """A fresh uid/gid per program when root (so RLIMIT_NPROC applies, root is exempt);
    otherwise our own ids, since only root may switch."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
    return uid, uid


def _owner_and_state(pid: str) -> tuple[int, str]:
    """Real uid and state letter of a process, from /proc/PID/status (the /proc entry's own
    owner is not the process uid for non-dumpable processes such as bwrap)."""
    uid, state = -1, "?"
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("State:"):
                state = line.split()[1]
            elif line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
    return uid, state


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) pids whose real uid is ``uid``; zombies are dead already and get
    reaped by their parent or init, so they need no kill."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            owner, state = _owner_and_state(name)
        except (OSError, ValueError, IndexError):
            continue
        if owner == uid and state not in ("Z", "X"):
            pids.append(int(name))
    return pids


def _kill_uid(uid: int) -> None:
    """Kill every process of a throw-away uid, repeating while a fork bomb keeps spawning."""
    for _ in range(_KILL_ROUNDS):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group; it may already be gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- rlimits -------------------------------------------------------------------------------


def _rlimits(limits: Limits, uid: int) -> list[tuple[int, tuple[int, int]]]:
    """The limits applied in the child before exec. NPROC counts every process of the uid,
    so for our own (non-throw-away) uid the processes we already own are added."""
    nproc = limits.nproc
    if os.geteuid() != 0:
        nproc += len(_pids_of_uid(uid))
    return [
        (resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)),
        (resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes)),
        (resource.RLIMIT_NPROC, (nproc, nproc)),
        (resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes)),
        (resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


def _preexec(rlimits: list[tuple[int, tuple[int, int]]]) -> Callable[[], None]:
    """Child-side hook run after the uid switch and before exec: only setrlimit calls, no
    imports or locks, so it is safe in a forked child of a threaded parent."""

    def apply() -> None:
        for which, value in rlimits:
            resource.setrlimit(which, value)

    return apply


# --- command lines -------------------------------------------------------------------------


def _python_argv(python: str, marker_fd: int) -> list[str]:
    """Isolated mode, no site: the driver reads the program from stdin, sees only the
    stdlib, and writes its token to `marker_fd` when the program returned normally."""
    return [python, "-I", "-S", "-c", DRIVER, str(marker_fd)]


# What the interpreter needs of the host, read-only. Nothing else of the host exists inside:
# no /run, /var, /home, /root, /srv, /opt, /mnt, so no host Unix-domain socket (D-Bus, a
# container runtime's, X11's) can be reached by its path; abstract sockets live in the
# network namespace, which is the sandbox's own.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_LINKER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")


def _filesystem(python: str) -> list[str]:
    """bwrap arguments for a root holding only the system directories (merged-/usr links
    kept as links), the dynamic linker's configuration and the interpreter's installation."""
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _LINKER_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if not prefix.startswith("/usr"):
        args += ["--ro-bind", prefix, prefix]
    return args


def _bwrap_argv(python: str, marker_fd: int, limits: Limits, uid: int, gid: int) -> list[str]:
    """bubblewrap command: a minimal read-only root, private /tmp as cwd, no network, own
    pid namespace."""
    bwrap = shutil.which("bwrap") or "bwrap"
    return [
        bwrap,
        "--unshare-user", "--uid", str(uid), "--gid", str(gid), "--disable-userns",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", "sandbox",
        "--die-with-parent", "--new-session",
        *_filesystem(python),
        "--proc", "/proc",
        "--dev", "/dev", "--remount-ro", "/dev",
        "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
        "--chdir", "/tmp",
        "--clearenv",
        "--setenv", "PATH", _SANDBOX_PATH,
        "--setenv", "HOME", "/tmp",
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--",
        *_python_argv(os.path.realpath(python), marker_fd),
    ]  # fmt: skip


def _minimal_env(home: str) -> dict[str, str]:
    """The whole environment a sandboxed program (or bwrap itself) gets."""
    return {"PATH": _SANDBOX_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


# --- running -------------------------------------------------------------------------------


def _feed_and_wait(proc: subprocess.Popen, source: bytes, timeout_s: float) -> bool:
    """Write the program to stdin and block on the child (no polling loop); a timer kills
    the process group at the deadline. Returns whether the deadline fired."""
    fired = threading.Event()

    def on_deadline() -> None:
        fired.set()
        _kill_group(proc.pid)

    timer = threading.Timer(timeout_s, on_deadline)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(source)
        except OSError:
            pass  # the child died or never read its stdin: its exit status tells the story
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
        proc.wait()
    finally:
        timer.cancel()
    return fired.is_set()


def _read_marker(fd: int) -> bytes:
    """What the program's side wrote to the marker pipe (every writer is dead by now)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 256):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 256:
                break
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _spawn(argv: Callable[[int], list[str]], source: str, limits: Limits, uid: int, gid: int,
           cwd: str) -> tuple[int | None, bool, str, bool]:
    """One process per program, in its own session/process group, stderr to a host file
    capped by RLIMIT_FSIZE. Returns (returncode, timed_out, stderr tail, the driver's token
    came back)."""
    switch = os.geteuid() == 0
    token = secrets.token_hex(16).encode()
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as errfile:
        try:
            command = argv(write_end)
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errfile,
                cwd=cwd,
                env=_minimal_env(cwd),
                start_new_session=True,
                close_fds=True,
                pass_fds=(write_end,),
                user=uid if switch else None,
                group=gid if switch else None,
                extra_groups=[] if switch else None,
                preexec_fn=_preexec(_rlimits(limits, uid)),  # noqa: PLW1509 (see _preexec)
            )
        except OSError as exc:  # e.g. the interpreter is not executable by the sandbox uid
            os.close(read_end)
            os.close(write_end)
            return None, False, f"cannot start {command[0]}: {exc}", False
        os.close(write_end)
        try:
            timed_out = _feed_and_wait(proc, token + b"\n" + source.encode("utf-8"),
                                       limits.timeout_s)
        finally:
            _kill_group(proc.pid)  # stragglers left in the group (rlimits mode)
            if switch:
                _kill_uid(uid)  # anything that escaped the group with setsid()
        marker = _read_marker(read_end)
        os.close(read_end)
        errfile.seek(max(0, os.fstat(errfile.fileno()).st_size - _STDERR_TAIL_BYTES))
        tail = errfile.read().decode("utf-8", errors="replace")
    return proc.returncode, timed_out, tail, marker == token


def _run_isolated(source: str, limits: Limits, isolation: str, python: str) -> RunResult:
    """Build the command for the isolation level, run it, classify the outcome."""
    uid, gid = _sandbox_ids()
    start = time.perf_counter()
    if isolation == "bwrap":
        rc, timed_out, tail, returned = _spawn(
            lambda fd: _bwrap_argv(python, fd, limits, uid, gid), source, limits, uid, gid,
            cwd="/")
    else:
        workdir = tempfile.mkdtemp(prefix="bench-sandbox-")
        try:
            if os.geteuid() == 0:
                os.chown(workdir, uid, gid)
            rc, timed_out, tail, returned = _spawn(lambda fd: _python_argv(python, fd), source,
                                                   limits, uid, gid, cwd=workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    duration = time.perf_counter() - start
    passed = rc == 0 and returned and not timed_out
    status = "passed" if passed else ("timeout" if timed_out else "failed")
    return RunResult(status, rc, duration, isolation, uid, tail)


def run_python(
    source: str,
    *,
    limits: Limits = Limits(),
    isolation: str | None = None,
    python: str | None = None,
) -> RunResult:
    """Run ``source`` as a Python program in a sandbox; pass means the program returned
    normally (the driver's token came back) in time.

    ``isolation`` None picks the strongest level that works here (see isolation_available).
    """
    level = isolation or isolation_available()
    if level not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {level!r}")
    if level == "bwrap" and not bwrap_works():
        raise RuntimeError("isolation='bwrap' requested but bubblewrap is missing or fails here")
    return _run_isolated(source, limits, level, python or sandbox_python(level))


# --- probing what works on this machine ---------------------------------------------------


def _interpreter_candidates() -> list[str]:
    """Our own interpreter first; system ones in case ours is unreadable to another uid
    (e.g. a pyenv install under a 0700 /root)."""
    found = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    return list(dict.fromkeys(p for p in found if p and os.path.exists(p)))


_PROBE = "import sys, math, re, hashlib, collections, itertools\nassert sys.version_info >= (3, 7)"
_PROBE_LIMITS = Limits(timeout_s=20.0)


@functools.cache
def _probe(isolation: str, python: str) -> RunResult:
    """Run a trivial program once per (level, interpreter); cached for the process."""
    return _run_isolated(_PROBE, _PROBE_LIMITS, isolation, python)


@functools.cache
def bwrap_works() -> bool:
    """Whether bwrap is installed and can build the sandbox here (user namespaces may be
    disabled by sysctl, AppArmor or a container runtime)."""
    if shutil.which("bwrap") is None:
        return False
    reason = "no Python interpreter found"
    for python in _interpreter_candidates():
        result = _probe("bwrap", python)
        if result.passed:
            return True
        reason = (result.stderr_tail.strip().splitlines() or [f"exit {result.returncode}"])[-1]
    warn(f"bubblewrap is installed but cannot run the sandbox here: {reason}")
    return False


@functools.cache
def isolation_available() -> str:
    """The strongest isolation that works on this machine: ``"bwrap"`` or ``"rlimits"``."""
    if bwrap_works():
        return "bwrap"
    if shutil.which("bwrap") is None:
        warn("bubblewrap (bwrap) not found: generated code will run with rlimits only")
    return "rlimits"


@functools.cache
def sandbox_python(isolation: str) -> str:
    """The first interpreter that runs the probe under ``isolation``."""
    candidates = _interpreter_candidates()
    for python in candidates:
        if _probe(isolation, python).passed:
            return python
    raise RuntimeError(
        f"no Python interpreter runs inside the {isolation!r} sandbox; tried {candidates} "
        "(each must be readable and executable by an unprivileged uid)"
    )
