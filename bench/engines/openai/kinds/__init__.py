"""The servers bench starts for a cell (engine.server), as rows of one table: each kind is
one module here defining `KIND`, a ServerKind that says what the server runs (schemes,
weights, vision models), which settings are its own, what it builds first, its command
line, its version and what its log tells. A new server is one module here and its preset in
conf/engine/; the server engine asks the table, never `if server == ...`.

The declarations are light (the plan reads them); what starts a server imports its needs
inside the methods, in the cell's process.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Device

# Where a server's command line comes back: the command, the weight bytes it will hold, and
# where they come from.
Command = tuple[list[str], Optional[int], str]


@dataclass(frozen=True)
class ServerKind:
    """One kind of server bench starts. The fields are data; the methods have defaults."""

    name: str  # engine.server's value
    words: str  # what the dry run says it is
    methods: tuple[str, ...]  # the quantization methods it serves
    weights: tuple[str, ...]  # the model sources it serves
    runs_gguf: bool = False  # it serves the cell's GGUF file, llama.cpp's settings apply
    vision: bool = False  # it serves vision-language models (engine.api=chat)
    gpu_runtime: Optional[str] = None  # this environment's library that drives its GPU
    own_settings: tuple[str, ...] = ()  # engine settings only this kind reads
    emulates_class: bool = False  # it can size itself to a smaller GPU class
    watches_slots: bool = False  # its /metrics and /slots are sampled while timed
    logprobs_issue: str = ""  # a known defect of its prompt log-probabilities

    # --- plan side: no heavy import ---------------------------------------------------------

    def check(self, cfg: "BenchConfig") -> None:
        """Refuse, in one line, settings this kind cannot take (BenchInputError)."""
        return None

    def needs_preparing(self, cfg: "BenchConfig") -> bool:
        """Whether what it loads is built untimed first (the cell's prepare step)."""
        return False

    # --- in the cell's process ---------------------------------------------------------------

    def python(self, configured: Optional[str]) -> str:
        """The interpreter it runs in: engine.server_python, else this one."""
        return configured or sys.executable

    def prepare(self, cfg: "BenchConfig") -> dict[str, Any]:
        return {}

    def command(self, cfg: "BenchConfig", device: "Device", python: str, port: int,
                utilization: Optional[float]) -> Command:
        raise NotImplementedError

    def version(self, cfg: "BenchConfig", python: str) -> Optional[str]:
        return None

    def served_file(self, cfg: "BenchConfig") -> Optional[Path]:
        """The GGUF file it serves, whose contents the row describes."""
        return None

    def log_facts(self, log_path: Path) -> dict[str, Any]:
        """What its log says (its KV cache, its memory), for the row."""
        return {}

    def device_buffers(self, log_path: Path) -> Optional[int]:
        """Device memory its log says it allocated itself (the context is the rest)."""
        return None

    def device_need(self, cfg: "BenchConfig", log_path: Path,
                    peak_bytes: int) -> dict[str, Any]:
        """What the model needs where the server reserves more (vLLM's KV cache)."""
        return {}


@lru_cache(maxsize=1)
def kinds() -> dict[str, ServerKind]:
    """engine.server's values, each its kind: every module here with a KIND."""
    found: dict[str, ServerKind] = {}
    for module in pkgutil.iter_modules(__path__):
        kind = getattr(importlib.import_module(f"{__name__}.{module.name}"), "KIND", None)
        if kind is not None:
            found[kind.name] = kind
    return dict(sorted(found.items()))


def kind(name: str) -> ServerKind:
    return kinds()[name]


def installed_version(python: str, distributions: tuple[str, ...]) -> Optional[str]:
    """`name version` of the first of `distributions` installed for the server's python."""
    import subprocess

    script = ("import importlib.metadata as m, sys\n"
              "for name in sys.argv[1:]:\n"
              "    try: print(name, m.version(name)); break\n"
              "    except m.PackageNotFoundError: pass\n")
    try:
        done = subprocess.run([python, "-c", script, *distributions], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def read_log(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")
    except OSError:
        return ""
