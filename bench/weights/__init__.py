"""Where a model's source weights come from, engine-independent: a checkpoint directory or
hub id (real weights; the tiny model, built offline), and their identity for caches.

Every quantized artefact bench caches (GPTQ/AWQ calibrations, GGUF conversions) is keyed by
`checkpoint_identity`, so a scheme of one engine and a scheme of another start from exactly
the same weights, and a moved branch never serves a stale cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from bench.core.paths import under

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

_HASH_LIMIT = 1 << 30  # local checkpoints up to this size are keyed by content, larger by stat


def checkpoint_path(cfg: "BenchConfig") -> str:
    """Directory or hub id of the unquantized checkpoint (tiny, packaged: made on demand)."""
    if cfg.resolved_weights == "tiny" and cfg.model.config_dir is not None:
        from bench.weights.vlm import ensure_tiny_vlm  # tiny models bench ships configs of

        return str(ensure_tiny_vlm(cfg))
    if cfg.resolved_weights == "tiny":
        from bench.weights.tiny import ensure_tiny_model

        return str(ensure_tiny_model(cfg.model, cfg.resolved_cache_dir))
    if cfg.resolved_weights == "packaged":
        from bench.weights.packaged import packaged_checkpoint

        return str(packaged_checkpoint(cfg.model, cfg.resolved_cache_dir))
    assert cfg.model.hf_id is not None
    return cfg.model.hf_id


# What a hub download fetches: configs, tokenizers, remote code and the weights (safetensors;
# the older .bin files only for checkpoints that have no safetensors)
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "tokenizer*", "*.tiktoken", "*.txt",
              "*.py", "*.jinja"]  # *.jinja: a processor's chat template


def download(repo: str, revision: Optional[str]) -> Optional[str]:
    """Fetch a hub checkpoint into the hub library's own cache, in a cell's prepare phase
    (untimed, under its own deadline), so that loading later reads local files and load_s
    is the load, not the network. Returns the snapshot directory; None for a local one."""
    if Path(repo).is_dir():
        return None
    from huggingface_hub import snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    path = snapshot_download(repo, revision=revision, token=token, allow_patterns=_HUB_FILES)
    if not any(Path(path).glob("*.safetensors")):
        path = snapshot_download(repo, revision=revision, token=token,
                                 allow_patterns=[*_HUB_FILES, "*.bin"])
    return str(path)


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
    """What a real, tiny or packaged checkpoint is, precisely enough to key a cache."""
    if cfg.resolved_weights == "packaged":
        assert cfg.model.package is not None  # validated
        return {"package": cfg.model.package.file, "sha256": cfg.model.package.sha256}
    path = Path(checkpoint_path(cfg))
    if path.is_dir():
        return {"local": path.name, "content": dir_fingerprint(path)}
    assert cfg.model.hf_id is not None
    return {"hub": cfg.model.hf_id, "commit": _hub_commit(cfg.model.hf_id, cfg.model.revision)}


def cached_identity(cfg: "BenchConfig") -> Optional[dict[str, Any]]:
    """checkpoint_identity of a checkpoint found without building or resolving anything (a
    parent-side "is it cached?" query: no builder is imported); None when it is not in the
    cache yet, or can only be resolved online (hub weights)."""
    if cfg.resolved_weights == "packaged":
        return checkpoint_identity(cfg)  # the package's published name and hash
    if cfg.resolved_weights == "tiny" and cfg.model.config_dir is not None:
        from bench.weights.pipelines import random_dir, random_is_built

        if random_is_built(cfg):
            return {"local": random_dir(cfg).name, "content": dir_fingerprint(random_dir(cfg))}
        return None
    if cfg.resolved_weights == "tiny":
        from bench.weights.tiny_cache import is_built, tiny_dir

        if is_built(cfg.model, cfg.resolved_cache_dir):
            path = tiny_dir(cfg.model, cfg.resolved_cache_dir)
            return {"local": path.name, "content": dir_fingerprint(path)}
    return None


def _pointer_path(cfg: "BenchConfig", kind: str, parts: dict[str, Any]) -> Path:
    key = json.dumps({"model": cfg.model.name, "weights": cfg.resolved_weights,
                      "hf_id": cfg.model.hf_id, "revision": cfg.model.revision, "kind": kind,
                      **parts}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return under(cfg.resolved_cache_dir, "pointers", kind, f"{digest}.json")


def remember(cfg: "BenchConfig", kind: str, parts: dict[str, Any], value: dict[str, Any]) -> None:
    """Leave what a cell's prepare step resolved (a hub commit's cache entry, ...) where its
    measuring process finds it without resolving again (which would import transformers)."""
    from bench.core.atomic import write_text

    write_text(_pointer_path(cfg, kind, parts), json.dumps(value, default=str) + "\n")


def recall(cfg: "BenchConfig", kind: str, parts: dict[str, Any]) -> Optional[dict[str, Any]]:
    """What `remember` left for these settings, or None."""
    path = _pointer_path(cfg, kind, parts)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
