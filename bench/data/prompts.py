"""The token ids of a speed workload: random, the same for a seed whatever the engine (the
content of a prompt does not change the cost of a forward pass)."""

from __future__ import annotations

import numpy as np


def random_prompt(batch_size: int, prompt_tokens: int, vocab_size: int,
                  seed: int) -> np.ndarray:
    """batch x prompt_tokens token ids, the same for a seed whatever the engine."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, size=(batch_size, prompt_tokens), dtype=np.int64)
