"""Where bench's own files are (the checkout and its conf/; BENCH_CONF_DIR overrides it), and
the one rule for what may become part of a path bench writes or reads."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # bench/core/paths.py


def conf_dir() -> Path:
    """The Hydra config directory the sweep app, the plan and the report read."""
    return Path(os.environ.get("BENCH_CONF_DIR", REPO / "conf"))


CONF_DIR = conf_dir()


# --- names that become parts of paths, and paths that must stay under their root ---------

MAX_NAME = 100
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class PathEscape(ValueError):
    """A path derived from configuration would leave the folder it belongs in."""


def name_problem(value: object) -> str | None:
    """Why `value` cannot be part of a path (None: it can): one rule for every model, scheme,
    class, engine, run and file name bench joins into a path."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty name"
    if len(value) > MAX_NAME:
        return f"is {len(value)} characters long; at most {MAX_NAME}"
    if not _SAFE_NAME.match(value) or ".." in value:
        return ("may hold letters, digits, '.', '_', '+' and '-' only, must start with a "
                "letter or digit, and may not contain '..'")
    return None


def relative_problem(value: object) -> str | None:
    """Why `value` cannot be a relative path of safe names (a file inside a wheel)."""
    if not isinstance(value, str) or not value or value.startswith("/"):
        return "must be a relative path"
    for part in value.split("/"):
        problem = name_problem(part)
        if problem is not None:
            return f"has a part {part!r} that {problem}"
    return None


def under(root: str | os.PathLike, *parts: str) -> Path:
    """root / parts, resolved (symbolic links followed), refused when it leaves root: no
    configuration value, however written, makes bench read or write outside its folders."""
    base = Path(root).expanduser().resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise PathEscape(f"{os.path.join(str(root), *parts)} resolves to {path}, outside "
                         f"{base}")
    return path
