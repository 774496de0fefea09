"""A server process bench starts for one cell: its command, its log, health, and its end.

The server runs in a session (process group) of its own, so stopping it stops everything
it spawned (vLLM's engine core, its workers), and it is told to die with the cell's process
(PR_SET_PDEATHSIG), so a cell killed from outside leaves no server behind. Its output goes
to a log file next to the cell's log; when it fails to start, dies or never answers, the
error carries the log's last lines.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.core.paths import REPO

_PR_SET_PDEATHSIG = 1
HOST = "127.0.0.1"  # servers bench starts answer this machine only
VLLM_VENV_PYTHON = REPO / ".venv-vllm" / "bin" / "python"  # made by `make vllm`
STOP_GRACE_S = 15.0
_POLL_S = 0.25  # between health probes while the server starts (nothing is measured then)


class ServerFailed(RuntimeError):
    """The server did not start, stopped answering, or died; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 15) -> str:
    """The server log's last meaningful lines (for the error row)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(the server wrote nothing)"


def last_line(path: Path) -> str:
    return log_tail(path, 1).strip()[:300]


def _die_with_cell() -> None:  # runs in the server's process, before exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class ServerProcess:
    """A running server: its process, log and base URL."""

    name: str
    command: list[str]
    proc: subprocess.Popen
    log_path: Path
    url: str
    started_s: float

    @classmethod
    def start(cls, name: str, command: list[str], env: dict[str, str], log_path: Path,
              port: int) -> "ServerProcess":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_cell)
        return cls(name, command, proc, log_path, f"http://{HOST}:{port}", time.perf_counter())

    def failure(self, what: str) -> ServerFailed:
        """An error whose first line says what happened and the log's last line; the rest
        of the message is the log's tail (the row's error_detail)."""
        return ServerFailed(f"{self.name} server {what}; its log ends: "
                            f"{last_line(self.log_path)}\n--- {self.log_path} ---\n"
                            f"{log_tail(self.log_path)}")

    def check_alive(self, during: str, grace_s: float = 0.0) -> None:
        """ServerFailed (with the log) when the server has exited, waiting up to `grace_s`
        for a server that is going (a dropped connection comes before the exit)."""
        try:
            code = self.proc.wait(grace_s) if grace_s else self.proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            raise self.failure(f"exited with code {code} during {during}")

    def wait_healthy(self, probe: Callable[[], bool], timeout_s: float) -> float:
        """Block until `probe` answers true (the API lists its models); seconds it took.
        Fails when the process exits first or `timeout_s` passes (the server is stopped)."""
        deadline = self.started_s + timeout_s
        while True:
            self.check_alive("start-up")
            if probe():
                return time.perf_counter() - self.started_s
            if time.perf_counter() > deadline:
                self.stop()
                raise self.failure(f"did not become healthy within engine.startup_timeout_s="
                                   f"{timeout_s:g}")
            time.sleep(_POLL_S)

    def pids(self) -> list[int]:
        """The server and every process it spawned (its memory is the model's)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> Optional[int]:
        """SIGTERM to the server's process group, SIGKILL after a grace; its exit code."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)  # whatever of the group is left (workers)
        try:
            return self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            return None

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def server_python(configured: Optional[str], server: str) -> str:
    """The interpreter a server runs in: engine.server_python, else this one (llama_cpp,
    whose server ships with llama-cpp-python[server]) or vLLM's own environment."""
    if configured:
        return configured
    if server == "vllm":
        if not VLLM_VENV_PYTHON.exists():
            from bench.core.errors import SkipCell

            raise SkipCell(f"engine.server=vllm needs vLLM's environment: run `make vllm` "
                           f"(or set engine.server_python); {VLLM_VENV_PYTHON} is missing")
        return str(VLLM_VENV_PYTHON)
    return sys.executable
