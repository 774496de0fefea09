"""The offline tiny model: a real checkpoint directory built on this machine, no hub needed.

The tokenizer (byte-level BPE) is trained on a corpus bench generates itself, and the
model is initialised with a fixed seed and trained on bench's offline MMLU-format items
(bench.data.invented_mmlu), so at full precision it scores far above chance there and a
broken scoring path shows. Same settings, same files. The directory is then loaded through the same
``from_pretrained`` path as a hub checkpoint, so CI exercises the real loading code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from bench.core.atomic import staged_dir
from bench.core.config import ModelConfig, TinyTraining
from bench.data import invented_mmlu
from bench.weights.tiny_cache import is_built, tiny_dir

if TYPE_CHECKING:  # heavy imports stay inside the functions: the parent only checks paths
    import torch
    from transformers import PreTrainedTokenizerFast

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


def tokenizer_corpus(seed: int = 0) -> Iterator[str]:
    """The generated text plus the offline MMLU-format items, so their words are tokens."""
    yield from corpus_lines(seed)
    for subject in invented_mmlu.SUBJECTS:
        for split in ("dev", "test"):
            for item in invented_mmlu.items(subject, split):
                yield (invented_mmlu.fewshot_prompt(item, 0) + invented_mmlu.TARGET_DELIMITER
                       + invented_mmlu.LETTERS[item.answer])


def build_tokenizer(vocab_size: int, seed: int = 0) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def training_examples(tokenizer: PreTrainedTokenizerFast) -> list[tuple[list[int], int]]:
    """(context ids, answer id) for every offline MMLU-format item, rendered as lm-eval
    renders them 0-shot: the model learns exactly what it is later asked."""
    out = []
    for subject in invented_mmlu.SUBJECTS:
        for split in ("dev", "test"):
            for item in invented_mmlu.items(subject, split):
                context = tokenizer(invented_mmlu.fewshot_prompt(item, 0),
                                    add_special_tokens=False).input_ids
                answer = tokenizer(invented_mmlu.TARGET_DELIMITER
                                   + invented_mmlu.LETTERS[item.answer],
                                   add_special_tokens=False).input_ids
                if len(answer) != 1:
                    raise RuntimeError(f"answer letter is {len(answer)} tokens, expected 1")
                out.append((context, answer[0]))
    return out


def train(net: torch.nn.Module, tokenizer: PreTrainedTokenizerFast,
          settings: TinyTraining) -> None:
    """Teach the model the invented facts: loss on the answer letter only, AdamW with a
    cosine schedule, fixed seed and sample order (same settings, same weights)."""
    import torch

    examples = training_examples(tokenizer)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=settings.steps, pct_start=0.1)
    net.train()
    order: list[int] = []
    for _ in range(settings.steps):
        if len(order) < settings.batch_size:
            order = list(range(len(examples)))
            rng.shuffle(order)
        batch = [examples[order.pop()] for _ in range(settings.batch_size)]
        width = max(len(context) for context, _ in batch) + 1
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100)
        for row, (context, answer) in enumerate(batch):
            ids[row, :len(context) + 1] = torch.tensor([*context, answer])
            mask[row, :len(context) + 1] = 1
            labels[row, len(context)] = answer
        loss = net(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    net.eval()


def ensure_tiny_model(model: ModelConfig, cache_dir: str | os.PathLike) -> Path:
    """The checkpoint directory, built on first use (atomically: concurrent cells agree).
    Finding a built one imports nothing heavy (an engine without torch may be asking)."""
    target = tiny_dir(model, cache_dir)
    if is_built(model, cache_dir):
        return target
    import torch
    from transformers import AutoModelForCausalLM

    from bench.weights.arch import hf_config

    with staged_dir(target, "config.json") as staging:
        tokenizer = build_tokenizer(model.arch.vocab_size, model.tiny.seed)
        config = hf_config(model.arch)
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        torch.manual_seed(model.tiny.seed)
        net = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if model.tiny.steps:
            train(net, tokenizer, model.tiny)
        net.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target
