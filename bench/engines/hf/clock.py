"""transformers' token clock: one greedy ``generate`` call, timestamped at every token.

A logits processor stamps the time each time ``generate`` produces a token's logits: the
first stamp ends prefill (TTFT), the rest are decode. min_new_tokens == max_new_tokens, and
checked. On CUDA, two clocks (workload.cuda_clock): `events` records a CUDA event per token
on the stream and synchronizes once, after the call, so the clock does not stall the
pipeline it measures; `sync` synchronizes at every token and reads the host clock (the
older, simpler clock the events are checked against: benchmarks/cuda_clock.py).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from bench.engines.base import GenerationTiming


class TokenClock(LogitsProcessor):
    """Records when generate() produces each token's logits: a host time (perf_counter,
    after a synchronize on CUDA) or a CUDA event on the current stream."""

    def __init__(self, device: torch.device, cuda_clock: str = "events") -> None:
        self.stamps: list[float] = []
        self.events: list[Any] = []
        cuda = device.type == "cuda"
        self._events = cuda and cuda_clock == "events"
        self._sync = cuda and not self._events

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._events:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)
            return scores
        if self._sync:
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return scores

    def start(self) -> Any:
        """The call's start: a host time, or an event (after a synchronize: an empty queue)."""
        if self._events or self._sync:
            torch.cuda.synchronize()
        if self._events:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def times(self, start: Any) -> tuple[list[float], float]:
        """(seconds from start to each token's logits, seconds from start to the end)."""
        if not self._events:
            if self._sync:
                torch.cuda.synchronize()
            end = time.perf_counter()
            return [s - start for s in self.stamps], end - start
        end_event = torch.cuda.Event(enable_timing=True)
        end_event.record()
        end_event.synchronize()  # the one wait of the call
        return ([start.elapsed_time(e) / 1e3 for e in self.events],
                start.elapsed_time(end_event) / 1e3)

    @property
    def count(self) -> int:
        return len(self.events) if self._events else len(self.stamps)


def generate_once(model: torch.nn.Module, input_ids: torch.Tensor, new_tokens: int,
                  cuda_clock: str = "events",
                  extra: Optional[dict[str, torch.Tensor]] = None,
                  ids_key: str = "input_ids") -> GenerationTiming:
    """One greedy generate call of exactly `new_tokens` tokens, timed per token. `extra`:
    further model inputs (a vision-language model's pixel values); `ids_key`:
    decoder_input_ids where the ids are an encoder-decoder's decoder prompt (Pix2Struct)."""
    clock = TokenClock(input_ids.device, cuda_clock)
    inputs = {ids_key: input_ids}
    if ids_key == "input_ids":
        inputs["attention_mask"] = torch.ones_like(input_ids)
    start = clock.start()
    out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, num_beams=1, use_cache=True,
                         pad_token_id=0, logits_processor=LogitsProcessorList([clock]),
                         **(extra or {}))
    stamps, end = clock.times(start)
    # an encoder-decoder returns the decoder's tokens: its start token, or the decoder prompt
    encoder_decoder = getattr(model.config, "is_encoder_decoder", False)
    prompt = 1 if encoder_decoder and ids_key == "input_ids" else input_ids.shape[1]
    made = out.shape[1] - prompt
    if made != new_tokens or clock.count != new_tokens:
        raise RuntimeError(f"generate made {made} tokens ({clock.count} logits calls); "
                           f"the workload asks for exactly {new_tokens}")
    return GenerationTiming(ttft_s=stamps[0], decode_s=end - stamps[0],
                            token_intervals_s=tuple(np.diff(stamps).tolist()))
