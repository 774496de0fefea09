"""Where bench's own files are: the checkout and its conf/ (BENCH_CONF_DIR overrides it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """The Hydra config directory the sweep app, the plan and the report read."""
    return Path(os.environ.get("BENCH_CONF_DIR", REPO / "conf"))


CONF_DIR = conf_dir()
