"""Where a figure came from: host, bench commit, and the versions of everything that ran it."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Optional

_PACKAGES = {"torch": "torch", "transformers": "transformers", "bitsandbytes": "bitsandbytes",
             "gptqmodel": "gptqmodel", "lm_eval": "lm_eval", "torchao": "torchao",
             "hqq": "hqq"}


def package_version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_sha() -> Optional[str]:
    """The commit of the bench checkout (with -dirty when it has local changes)."""
    repo = Path(__file__).resolve().parents[2]  # bench/core/provenance.py
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


@lru_cache(maxsize=1)
def cpu_model() -> Optional[str]:
    """The CPU's model name (speeds on two CPUs are not compared as one history)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def static_provenance() -> dict[str, Optional[str]]:
    """Provenance that needs no import of the heavy libraries (the parent fills these)."""
    out: dict[str, Optional[str]] = {"host": socket.gethostname(), "git_sha": git_sha(),
                                     "python": platform.python_version(),
                                     "cpu_model": cpu_model()}
    out.update({column: package_version(dist) for column, dist in _PACKAGES.items()})
    return out
