"""Calibration sets for GPTQ/AWQ: token sequences, deterministic for a given configuration.

``corpus`` is the text bench itself generates (bench.weights.tiny.corpus_lines, what the tiny
model's tokenizer is trained on), ``random`` is uniform random token ids (the honest choice
for random synthetic weights), ``c4`` and ``wikitext2`` are the usual hub sets for real
checkpoints (network needed once; `datasets` caches them). ``auto`` picks by weight source.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch

from bench.core.config import QuantConfig

# Seeds differ from the tiny model's training text (seed 0): calibrate on unseen lines.
CORPUS_SEED = 1
RANDOM_SEED = 1234
_AUTO = {"real": "c4", "packaged": "c4", "tiny": "corpus", "synthetic": "random"}


def resolve_dataset(quant: QuantConfig, weights: str) -> str:
    """The concrete calibration set name (what the cache key and the note record)."""
    name = quant.calibration_dataset or "auto"
    return _AUTO[weights] if name == "auto" else name


def _c4() -> Iterable[str]:
    from datasets import load_dataset

    # One shard of C4's English train split, as GPTQ's reference code samples it.
    ds = load_dataset("allenai/c4", data_files="en/c4-train.00001-of-01024.json.gz",
                      split="train")
    return ds["text"]


def _wikitext2() -> Iterable[str]:
    from datasets import load_dataset

    ds = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="train")
    return (t for t in ds["text"] if t.strip())


def _corpus() -> Iterable[str]:
    from bench.weights.tiny import corpus_lines

    return corpus_lines(seed=CORPUS_SEED, n=200_000)


_TEXT_SETS: dict[str, Callable[[], Iterable[str]]] = {
    "c4": _c4, "wikitext2": _wikitext2, "corpus": _corpus}


def _chunk_text(texts: Iterable[str], tokenizer: Any, samples: int,
                seq_len: int) -> list[list[int]]:
    """Concatenate tokenized texts (EOS between them) and cut full seq_len windows."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    buffer: list[int] = []
    out: list[list[int]] = []
    for text in texts:
        buffer.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + eos)
        while len(buffer) >= seq_len:
            out.append(buffer[:seq_len])
            buffer = buffer[seq_len:]
            if len(out) == samples:
                return out
    raise ValueError(f"calibration text ran out after {len(out)} of {samples} sequences")


def _random_ids(vocab_size: int, samples: int, seq_len: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(RANDOM_SEED)
    return torch.randint(0, vocab_size, (samples, seq_len), generator=gen).tolist()


def calibration_set(quant: QuantConfig, weights: str, vocab_size: int,
                    tokenizer: Optional[Any]) -> list[dict[str, list[int]]]:
    """`calibration_samples` sequences of `calibration_seq_len` token ids, in the format
    gptqmodel's quantize() takes."""
    name = resolve_dataset(quant, weights)
    samples, seq_len = quant.calibration_samples, quant.calibration_seq_len
    assert samples is not None and seq_len is not None  # validated for gptq/awq
    if name == "random":
        rows = _random_ids(vocab_size, samples, seq_len)
    else:
        if tokenizer is None:
            raise ValueError(f"calibration_dataset={name} needs the model's tokenizer; "
                             f"weights={weights} has none (use calibration_dataset=random)")
        rows = _chunk_text(_TEXT_SETS[name](), tokenizer, samples, seq_len)
    return [{"input_ids": r, "attention_mask": [1] * len(r)} for r in rows]
