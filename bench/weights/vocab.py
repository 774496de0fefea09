"""Byte-level BPE's alphabet, for the stand-in tokenizers of random weights (the synthetic
GGUF vocabulary, the tiny and synthetic diffusion pipelines' CLIP tokenizers)."""

from __future__ import annotations


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2's byte-to-unicode table), in its
    order: the printable bytes as themselves, then every other byte as chr(256 + n). Written
    here: transformers' copy is a private helper that 5.24 removed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]
