"""HumanEval scoring through the real sandbox: canonical solutions pass, hostile ones are
contained. No mocks: every program below really runs (bwrap when it works here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from bench.evals import humaneval, sandbox

REPO = Path(__file__).resolve().parents[1]
HOSTILE_TASK = "HumanEval/0"
BYSTANDERS = ["HumanEval/1", "HumanEval/2", "HumanEval/3", "HumanEval/4"]

needs_bwrap = pytest.mark.skipif(
    not sandbox.bwrap_works(),
    reason="bubblewrap is not installed or cannot create namespaces here",
)
LEVELS = [pytest.param("bwrap", marks=needs_bwrap), "rlimits"]


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return humaneval.load_problems()


def canonical(problems: dict[str, dict], task_ids: list[str] | None = None) -> list[dict]:
    ids = task_ids if task_ids is not None else list(problems)
    return [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in ids]


def sandbox_processes() -> list[psutil.Process]:
    """Live processes that look like a sandbox: bwrap or our `python -I -S -` runner."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or not cmd:
            continue
        if os.path.basename(cmd[0]) == "bwrap" or cmd[1:4] == ["-I", "-S", "-c"]:
            found.append(proc)
    return found


def score_hostile(problems: dict[str, dict], completion: str, level: str,
                  timeout_s: float = 3.0) -> humaneval.HumanEvalScore:
    """Score one hostile completion next to canonical bystanders, in one batch."""
    samples = [{"task_id": HOSTILE_TASK, "completion": completion}]
    samples += canonical(problems, BYSTANDERS)
    return humaneval.score_completions(samples, timeout_s=timeout_s, workers=2,
                                       allow_code_execution=True, isolation=level)


def assert_contained(score: humaneval.HumanEvalScore, reason: str) -> None:
    """The hostile task failed for the expected reason, the batch was unharmed, and no
    sandbox process outlived the run."""
    assert score.per_task[HOSTILE_TASK] is False
    assert score.reasons[HOSTILE_TASK] == reason
    assert all(score.per_task[t] for t in BYSTANDERS), score.reasons
    assert score.passed == len(BYSTANDERS)
    assert sandbox_processes() == []


# --- data and the canonical solutions --------------------------------------------------


def test_problems_are_the_real_164(problems: dict[str, dict]) -> None:
    assert len(problems) == 164
    assert set(problems) == {f"HumanEval/{i}" for i in range(164)}
    assert {"prompt", "canonical_solution", "test", "entry_point"} <= problems["HumanEval/0"].keys()


def test_all_canonical_solutions_pass(problems: dict[str, dict]) -> None:
    start = time.perf_counter()
    score = humaneval.score_completions(canonical(problems), allow_code_execution=True)
    elapsed = time.perf_counter() - start
    print(f"\n164 canonical solutions, isolation={score.isolation}: {elapsed:.1f} s")
    assert (score.n, score.passed, score.pass_at_1) == (164, 164, 1.0)
    assert score.isolation == sandbox.isolation_available()
    assert set(score.reasons.values()) == {"passed"}


def test_rlimits_fallback_scores_canonical_solutions(problems: dict[str, dict]) -> None:
    score = humaneval.score_completions(canonical(problems), allow_code_execution=True,
                                        isolation="rlimits")
    assert (score.n, score.passed, score.pass_at_1, score.isolation) == (164, 164, 1.0, "rlimits")


def test_cli_scores_canonical_solutions(problems: dict[str, dict], tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in canonical(problems)))
    out = subprocess.run([sys.executable, "-m", "bench.evals.humaneval", str(path)],
                         cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert list(summary)[:3] == ["n", "passed", "pass_at_1"]
    assert (summary["n"], summary["passed"], summary["pass_at_1"]) == (164, 164, 1.0)
    assert summary["isolation"] == sandbox.isolation_available()


def test_cli_per_task_lines_then_summary(problems: dict[str, dict], tmp_path: Path) -> None:
    samples = canonical(problems, ["HumanEval/5", "HumanEval/6"])
    samples.append({"task_id": "HumanEval/7", "completion": "    return []\n"})
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    out = subprocess.run([sys.executable, "-m", "bench.evals.humaneval", str(path),
                          "--per-task"], cwd=REPO, check=False, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["task_id"] for r in rows[:3]] == ["HumanEval/5", "HumanEval/6", "HumanEval/7"]
    assert [r["passed"] for r in rows[:3]] == [True, True, False]
    assert rows[3]["n"] == 3 and rows[3]["passed"] == 2
    assert rows[3]["pass_at_1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "content, expected",
    [(None, "no such file"), ('{"task_id": "HumanEval/0"', "not valid JSON"),
     ('{"task_id": "HumanEval/0"}\n', "expected an object"),
     ('{"task_id": "HumanEval/999", "completion": ""}\n', "unknown task_id")],
)
def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path: Path, content: str | None,
                                                   expected: str) -> None:
    path = tmp_path / "samples.jsonl"
    if content is not None:
        path.write_text(content)
    out = subprocess.run([sys.executable, "-m", "bench.evals.humaneval", str(path)],
                         cwd=REPO, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert expected in out.stderr


# --- API contract ----------------------------------------------------------------------


def test_code_execution_requires_opt_in(problems: dict[str, dict]) -> None:
    with pytest.raises(humaneval.CodeExecutionNotAllowed, match="allow_code_execution=True"):
        humaneval.score_completions(canonical(problems, ["HumanEval/0"]))


def test_unknown_task_id_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="unknown task_id 'HumanEval/164'"):
        humaneval.score_completions([{"task_id": "HumanEval/164", "completion": ""}],
                                    allow_code_execution=True)


def test_wrong_completion_fails(problems: dict[str, dict]) -> None:
    samples = [{"task_id": "HumanEval/2", "completion": "    return number\n"}]
    samples += canonical(problems, ["HumanEval/3"])
    score = humaneval.score_completions(samples, allow_code_execution=True)
    assert score.per_task == {"HumanEval/2": False, "HumanEval/3": True}
    assert score.reasons["HumanEval/2"] == "failed"
    assert score.pass_at_1 == 0.5


@needs_bwrap
def test_bwrap_sandbox_is_unprivileged_with_clean_environment() -> None:
    program = (
        "import os, sys\n"
        "assert os.getuid() != 0 and os.getgid() != 0\n"
        "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'PWD'}, os.environ\n"
        "assert os.getcwd() == '/tmp' and os.listdir('.') == []\n"
        "open('scratch.txt', 'w').write('cwd is writable')\n"
        "assert os.getpid() <= 3, os.getpid()\n"  # own pid namespace
    )
    result = sandbox.run_python(program, isolation="bwrap")
    assert result.passed, result.stderr_tail


# --- hostile completions ---------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_infinite_loop_times_out(problems: dict[str, dict], level: str) -> None:
    start = time.perf_counter()
    score = score_hostile(problems, "    while True:\n        pass\n", level, timeout_s=2.0)
    assert time.perf_counter() - start < 15
    assert_contained(score, "timeout")


@pytest.mark.parametrize("level", LEVELS)
def test_memory_bomb_fails(problems: dict[str, dict], level: str) -> None:
    bomb = "    hoard = []\n    while True:\n        hoard.append(bytearray(64 << 20))\n"
    score = score_hostile(problems, bomb, level, timeout_s=10.0)
    assert_contained(score, "failed")  # MemoryError under RLIMIT_AS, well before the deadline


@pytest.mark.parametrize("level", LEVELS)
def test_fork_bomb_is_contained(problems: dict[str, dict], level: str) -> None:
    bomb = (
        "    import os\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    score = score_hostile(problems, bomb, level, timeout_s=2.0)
    assert_contained(score, "timeout")
    assert psutil.cpu_count() and psutil.virtual_memory().available > 0  # machine still fine


@needs_bwrap
def test_writes_outside_the_sandbox_do_not_land(problems: dict[str, dict],
                                                 tmp_path: Path) -> None:
    marker = f"bench-escape-{uuid.uuid4().hex}"
    targets = [tmp_path / marker, Path("/tmp") / marker, Path("/var/tmp") / marker]
    attempt = (
        f"    for path in {[str(t) for t in targets]!r}:\n"
        "        try:\n"
        "            with open(path, 'w') as handle:\n"
        "                handle.write('escaped')\n"
        "        except OSError:\n"
        "            pass\n"
        "    return None\n"
    )
    score = score_hostile(problems, attempt, "bwrap")
    assert_contained(score, "failed")
    assert [t for t in targets if t.exists()] == []


@needs_bwrap
def test_network_connection_is_refused(problems: dict[str, dict]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        attempt = (
            "    import socket\n"
            f"    with socket.create_connection(('127.0.0.1', {port}), timeout=2) as conn:\n"
            "        conn.sendall(b'escaped')\n"
            "    return None\n"
        )
        score = score_hostile(problems, attempt, "bwrap")
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    assert_contained(score, "failed")


# --- false passes: ending the interpreter successfully is not passing -------------------

# Completions of HumanEval/0 that end the interpreter with status 0 (or try to) before or
# instead of the tests: each must score as failed, whatever the exit status. Module-level
# code comes after the function body, dedented, as a completion can write it.
EXITS_BEFORE_THE_TESTS = {
    "sys.exit(0) at module level": "    return True\nimport sys\nsys.exit(0)\n",
    "raise SystemExit(0)": "    return True\nraise SystemExit(0)\n",
    "os._exit(0) at module level": "    return True\nimport os\nos._exit(0)\n",
    "sys.exit(0) inside the function": "    import sys\n    sys.exit(0)\n",
    "os._exit(0) inside the function": "    import os\n    os._exit(0)\n",
    "exit() builtin": "    return True\nexit()\n",
    "quit() builtin": "    return True\nquit(0)\n",
    "atexit handler exiting 0": ("    return True\nimport atexit, os\n"
                                 "atexit.register(os._exit, 0)\n"),
    "silenced excepthook": "    return True\nimport sys\nsys.excepthook = lambda *a: None\n",
    "SIGALRM handler exiting 0": (
        "    return True\nimport os, signal\n"
        "signal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.001)\n"),
    "thread calling os._exit(0)": (
        "    return True\nimport os, threading\n"
        "threading.Thread(target=lambda: os._exit(0)).start()\n"),
    "exec of /bin/true": "    return True\nimport os\nos.execv('/bin/true', ['true'])\n",
    "guessed markers on every fd": (
        "    return True\nimport os\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, b'0' * 32)\n    except OSError:\n        pass\n"
        "os._exit(0)\n"),
    "SIGTERM to itself with a handler exiting 0": (
        "    return True\nimport os, signal\n"
        "signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"),
    "stdout and stderr closed, then exit 0": (
        "    return True\nimport os, sys\nos.close(1)\nos.close(2)\nsys.exit(0)\n"),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(EXITS_BEFORE_THE_TESTS))
def test_a_successful_exit_is_not_a_pass(problems: dict[str, dict], level: str,
                                         name: str) -> None:
    score = score_hostile(problems, EXITS_BEFORE_THE_TESTS[name], level)
    assert_contained(score, "failed")


def test_the_pass_is_the_drivers_word_after_the_program_returned() -> None:
    """The same program passes when it ends normally, and fails with exit status 0 when it
    leaves before the end."""
    assert sandbox.run_python("x = 1\n").passed
    assert not sandbox.run_python("import os\nos._exit(0)\nx = 1\n").passed
    assert sandbox.run_python("import os\nos._exit(0)\n").returncode == 0


# --- host Unix-domain sockets ----------------------------------------------------------


@needs_bwrap
def test_host_unix_sockets_are_unreachable(problems: dict[str, dict], tmp_path: Path) -> None:
    """A listener on a socket file in the host's /run, /var/tmp and /tmp (as D-Bus, a
    container runtime or X11 would have): the completion cannot connect to any of them."""
    name = f"bench-socket-{uuid.uuid4().hex[:8]}.sock"
    paths = [Path("/run") / name, Path("/var/tmp") / name, tmp_path / name]
    servers = []
    try:
        for path in paths:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o777)  # even a world-writable socket
            server.listen(8)
            server.setblocking(False)
            servers.append(server)
        attempt = (
            "    import socket\n"
            f"    for path in {[str(p) for p in paths]!r}:\n"
            "        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "        try:\n"
            "            client.connect(path)\n"
            "            client.sendall(b'escaped')\n"
            "            return True\n"
            "        except OSError:\n"
            "            pass\n"
            "    raise RuntimeError('no host socket reachable')\n"
        )
        score = score_hostile(problems, attempt, "bwrap")
        for server in servers:
            with pytest.raises(BlockingIOError):
                server.accept()  # nobody ever connected
        assert_contained(score, "failed")
    finally:
        for server in servers:
            server.close()
        for path in paths:
            path.unlink(missing_ok=True)
