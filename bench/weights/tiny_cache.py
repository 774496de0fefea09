"""Where the tiny model lives in the cache and whether it is built: what a parent-side "is it
cached?" query needs, without importing the code that builds it (bench.weights.tiny)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from bench.core.config import ModelConfig
from bench.core.paths import under

BUILDER_VERSION = 1


def _fingerprint(model: ModelConfig) -> str:
    blob = json.dumps({"v": BUILDER_VERSION, "arch": dataclasses.asdict(model.arch),
                       "tiny": dataclasses.asdict(model.tiny)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def tiny_dir(model: ModelConfig, cache_dir: str | os.PathLike) -> Path:
    return under(cache_dir, "tiny", f"{model.name}-{_fingerprint(model)}")


def is_built(model: ModelConfig, cache_dir: str | os.PathLike) -> bool:
    return (tiny_dir(model, cache_dir) / "config.json").exists()
