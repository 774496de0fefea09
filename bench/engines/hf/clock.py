"""transformers' token clock: one greedy ``generate`` call, timestamped at every token.

A logits processor stamps the time each time ``generate`` produces a token's logits: the
first stamp ends prefill (TTFT), the rest are decode. On CUDA the stamp synchronizes first,
so it is the time the logits exist. min_new_tokens == max_new_tokens, and checked.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from bench.engines.base import GenerationTiming


class TokenClock(LogitsProcessor):
    """Records perf_counter() each time generate() produces a token's logits."""

    def __init__(self, device: torch.device) -> None:
        self.stamps: list[float] = []
        self._sync = device.type == "cuda"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._sync:
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return scores


def generate_once(model: torch.nn.Module, input_ids: torch.Tensor,
                  new_tokens: int) -> GenerationTiming:
    """One greedy generate call of exactly `new_tokens` tokens, timed per token."""
    clock = TokenClock(input_ids.device)
    attention_mask = torch.ones_like(input_ids)
    if input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, num_beams=1, use_cache=True,
                         pad_token_id=0, logits_processor=LogitsProcessorList([clock]))
    if input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    made = out.shape[1] - input_ids.shape[1]
    if made != new_tokens or len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generate made {made} tokens ({len(clock.stamps)} logits calls); "
                           f"the workload asks for exactly {new_tokens}")
    stamps = clock.stamps
    return GenerationTiming(ttft_s=stamps[0] - start, decode_s=end - stamps[0],
                            token_intervals_s=tuple(np.diff(stamps).tolist()))
