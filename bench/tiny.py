"""The offline tiny model: a real checkpoint directory built on this machine, no hub needed.

The tokenizer (byte-level BPE) is trained on a corpus bench generates itself, and the
model is initialised (and, where conf says so, trained) with a fixed seed, so the same
settings always give the same files. The directory is then loaded through the same
``from_pretrained`` path as a hub checkpoint, so CI exercises the real loading code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from bench.config import ModelConfig

BUILDER_VERSION = 1
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                  "pad_token": "<pad>"}

_SUBJECTS = ["the river", "a teacher", "the engine", "my neighbour", "the committee",
             "a small bird", "the compiler", "our team", "the old library", "a physicist"]
_VERBS = ["measures", "describes", "builds", "finds", "explains", "repairs", "counts",
          "observes", "writes", "tests"]
_OBJECTS = ["the results", "a long bridge", "every function", "the weather", "three apples",
            "the memory usage", "a new theory", "the quiet town", "each token", "the answer"]


def corpus_lines(seed: int = 0, n: int = 4000) -> Iterator[str]:
    """Deterministic English, arithmetic and Python lines: enough to train a small BPE."""
    rng = random.Random(seed)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            yield (f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
                   f"{rng.choice(_OBJECTS)}.")
        elif kind == 1:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            yield f"Question: what is {a} plus {b}? Answer: {a + b}"
        else:
            name = rng.choice(["total", "count", "value", "items", "result"])
            yield (f"def f_{i}({name}):\n    return [x * {rng.randint(2, 9)} for x in {name} "
                   f"if x > {rng.randint(0, 9)}]\n")


def build_tokenizer(vocab_size: int, seed: int = 0) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(seed), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def _fingerprint(model: ModelConfig) -> str:
    blob = json.dumps({"v": BUILDER_VERSION, "arch": dataclasses.asdict(model.arch),
                       "tiny": dataclasses.asdict(model.tiny)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def tiny_dir(model: ModelConfig, cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / "tiny" / f"{model.name}-{_fingerprint(model)}"


def ensure_tiny_model(model: ModelConfig, cache_dir: str | os.PathLike) -> Path:
    """The checkpoint directory, built on first use (atomically: concurrent cells agree)."""
    from bench.loading import hf_config  # loading imports this module

    target = tiny_dir(model, cache_dir)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = build_tokenizer(model.arch.vocab_size, model.tiny.seed)
        config = hf_config(model.arch)
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        torch.manual_seed(model.tiny.seed)
        net = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        net.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent builder's win
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
