"""Vision-language models' weights without a hub: the whole config bench ships
(conf/model/configs/<config_dir>/config.json, as the hub repository holds it), and the tiny
model written once from it with fixed random weights in float32 (its own quality reference),
loaded afterwards the way a hub checkpoint is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.core.config import BenchConfig


def vlm_config(cfg: "BenchConfig") -> Any:
    """The model's whole config from the file bench ships."""
    from transformers import AutoConfig

    from bench.weights.pipelines import config_root

    data = json.loads((config_root(cfg) / "config.json").read_text(encoding="utf-8"))
    return AutoConfig.for_model(**data)


def ensure_tiny_vlm(cfg: "BenchConfig") -> Path:
    """The tiny model's directory, written once (untimed, in the cell's prepare step)."""
    import accelerate
    import torch
    from transformers import AutoModelForImageTextToText

    from bench.core.atomic import staged_dir
    from bench.weights.pipelines import random_dir, random_is_built
    from bench.weights.random_weights import materialize_random

    target = random_dir(cfg)
    if random_is_built(cfg):
        return target
    with accelerate.init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(vlm_config(cfg), dtype=torch.float32)
    materialize_random(model, torch.float32, torch.device("cpu"), cfg.seed)
    with staged_dir(target, "config.json") as staging:
        model.save_pretrained(staging)
    return target
