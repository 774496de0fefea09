"""Diffusion pipelines' weights: the true architecture of each component built from the
config files bench ships (conf/model/configs/<config_dir>/: model_index.json and each
component's config, as the hub repository holds them), with random weights (synthetic), or
written once as a pipeline directory with fixed random weights (tiny, for the tests), loaded
afterwards exactly as a hub checkpoint is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.paths import CONF_DIR, under

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

TINY_FORMAT = 1


def config_root(cfg: "BenchConfig") -> Path:
    if cfg.model.config_dir is None:
        raise LookupError(f"model={cfg.model.name} ships no config files (model.config_dir): "
                          f"its architecture is measured from the hub (weights=real)")
    return under(CONF_DIR / "model" / "configs", cfg.model.config_dir)


def pipeline_index(root: Path) -> dict[str, Any]:
    return json.loads((root / "model_index.json").read_text(encoding="utf-8"))


def components(root: Path) -> dict[str, tuple[str, str]]:
    """Component name -> (library, class) of a pipeline's index."""
    return {k: (v[0], v[1]) for k, v in pipeline_index(root).items()
            if not k.startswith("_") and isinstance(v, list)}


def _config(root: Path, name: str) -> dict[str, Any]:
    folder = root / name
    path = folder / ("scheduler_config.json" if name == "scheduler" else "config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def build_component(root: Path, name: str, library: str, class_name: str) -> Any:
    """One component from its config: a module on the meta device, or a scheduler."""
    import accelerate

    config = _config(root, name)
    module = __import__(library)
    cls = getattr(module, class_name)
    if name == "scheduler":
        return cls.from_config(config)
    with accelerate.init_empty_weights(include_buffers=False):
        if library == "diffusers":
            return cls.from_config(config)
        config_cls = cls.config_class
        return cls(config_cls(**{k: v for k, v in config.items() if k != "architectures"}))


def parameter_count(root: Path) -> int:
    """Parameters of the whole pipeline as its configs build it (the model conf's `params`
    is checked against this)."""
    total = 0
    for name, (library, cls) in components(root).items():
        if name != "scheduler":
            total += sum(p.numel() for p in build_component(root, name, library,
                                                            cls).parameters())
    return total


# What random pipelines are stored in: the tiny ones in float32 (they are their own quality
# reference); synthetic ones at real size in float16, half the disk, as most hub
# checkpoints ship (a cell loads them at its scheme's dtype).
_STORED = {"tiny": "float32", "synthetic": "float16"}


def random_dir(cfg: "BenchConfig") -> Path:
    """Where the pipeline of random weights for this model and seed is written."""
    root = config_root(cfg)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.json")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    stored = _STORED[cfg.resolved_weights]
    digest.update(f"{TINY_FORMAT}:{cfg.seed}:{stored}".encode())
    return under(cfg.resolved_cache_dir, "pipelines",
                 f"{cfg.model.name}-{digest.hexdigest()[:12]}")


def random_is_built(cfg: "BenchConfig") -> bool:
    """Whether the random weights are written (a pipeline's index, or a model's config: the
    last file each writer puts down before the directory takes its name)."""
    return any((random_dir(cfg) / marker).is_file()
               for marker in ("model_index.json", "config.json"))


def ensure_random_pipeline(cfg: "BenchConfig") -> Path:
    """The pipeline of random weights, written once (untimed, in the cell's prepare step):
    every component built from its config with fixed random weights (the cell's seed),
    stand-in tokenizers and image processor, saved as diffusers saves a pipeline, so that a
    cell loads it exactly as a hub checkpoint."""
    import torch

    from bench.core.atomic import staged_dir
    from bench.weights.random_weights import materialize_random

    target = random_dir(cfg)
    if random_is_built(cfg):
        return target
    root = config_root(cfg)
    dtype = getattr(torch, _STORED[cfg.resolved_weights])
    index = pipeline_index(root)
    with staged_dir(target, "model_index.json") as staging:
        for name, (library, cls) in components(root).items():
            component = build_component(root, name, library, cls)
            if name != "scheduler":
                materialize_random(component, dtype, torch.device("cpu"), cfg.seed)
            component.save_pretrained(staging / name)
            if name.startswith("text_encoder"):
                tokenizer = "tokenizer" + name[len("text_encoder"):]
                write_clip_tokenizer(staging / tokenizer, component.config)
                index[tokenizer] = ["transformers", "CLIPTokenizer"]
            if name == "image_encoder":
                _write_image_processor(staging / "feature_extractor",
                                       int(component.config.image_size))
                index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
            del component
        (staging / "model_index.json").write_text(json.dumps(index, indent=1) + "\n",
                                                  encoding="utf-8")
    return target


def write_clip_tokenizer(folder: Path, text_config: Any) -> None:
    """A CLIP tokenizer without merges (every character a token: the byte-level alphabet,
    alone and word-final), its start and end tokens at the ids the text encoder's
    vocabulary ends with, as CLIP's own: real text in, valid ids out, for random weights
    that have no tokenizer of their own (speed and memory do not depend on the strings)."""
    from bench.weights.vocab import byte_symbols

    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    size = int(text_config.vocab_size)
    if size < len(vocab) + 2:
        raise ValueError(f"a text encoder of {size} tokens cannot hold the {len(vocab) + 2} "
                         f"of the stand-in tokenizer")
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = size - 2, size - 1
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer",
              "model_max_length": int(text_config.max_position_embeddings),
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1),
                                                  encoding="utf-8")


def _write_image_processor(folder: Path, size: int) -> None:
    """CLIP's image processor at the image encoder's input size (what image-to-video
    pipelines resize the conditioning image with)."""
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": size},
                       crop_size={"height": size, "width": size}).save_pretrained(folder)
