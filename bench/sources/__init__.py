"""Where a model's source weights come from, engine-independent: a checkpoint directory or
hub id (real weights; the tiny model, built offline), and their identity for caches.

Every quantized artefact bench caches (GPTQ/AWQ calibrations, GGUF conversions) is keyed by
`checkpoint_identity`, so a scheme of one engine and a scheme of another start from exactly
the same weights, and a moved branch never serves a stale cache entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import BenchConfig

_HASH_LIMIT = 1 << 30  # local checkpoints up to this size are keyed by content, larger by stat


def checkpoint_path(cfg: "BenchConfig") -> str:
    """Directory or hub id of the unquantized checkpoint (tiny: built on demand)."""
    if cfg.resolved_weights == "tiny":
        from bench.sources.tiny import ensure_tiny_model

        return str(ensure_tiny_model(cfg.model, cfg.resolved_cache_dir))
    assert cfg.model.hf_id is not None
    return cfg.model.hf_id


def dir_fingerprint(path: Path) -> str:
    """Content hash of a local checkpoint's config and weights (stat for very large ones)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    by_content = sum(p.stat().st_size for p in files) <= _HASH_LIMIT
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        if by_content:
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        else:
            st = p.stat()
            digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _hub_commit(hf_id: str, revision: str) -> str:
    """The commit a branch or tag points at (a branch moves; the cache must not)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_id, revision=revision,
                                        token=os.environ.get("HF_TOKEN") or None)
    return getattr(config, "_commit_hash", None) or revision


def checkpoint_identity(cfg: "BenchConfig") -> dict[str, Any]:
    """What a real or tiny checkpoint is, precisely enough to key a cache."""
    path = Path(checkpoint_path(cfg))
    if path.is_dir():
        return {"local": path.name, "content": dir_fingerprint(path)}
    assert cfg.model.hf_id is not None
    return {"hub": cfg.model.hf_id, "commit": _hub_commit(cfg.model.hf_id, cfg.model.revision)}
