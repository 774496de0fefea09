"""lm-eval's HFLM, with multi-token continuations scored from their context's KV cache.

HFLM already evaluates a context once for all its one-token continuations (MMLU's letters),
but runs the whole context again for every longer one: MMLU's cloze form costs four full
forward passes per question. Here up to `batch_size` distinct contexts are evaluated in one
left-padded batch (positions from the attention mask, as `generate` does), their KV cache
rows are gathered for every continuation, and the continuations' tokens run as one
right-padded batch after them. The log-likelihoods are HFLM's up to floating-point rounding
(tested; log-softmax in float32); everything else, one-token continuations and generation
included, is HFLM's own code.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from lm_eval.models.huggingface import HFLM

Request = tuple[Any, list[int], list[int]]


class PrefixCacheHFLM(HFLM):
    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: Optional[int] = None) -> list[tuple[float, bool]]:
        groups: dict[tuple[int, ...], list[int]] = {}
        direct: list[int] = []  # HFLM's own path: one-token continuations, overlong requests
        for i, (_, context, continuation) in enumerate(requests):
            if (len(continuation) < 2 or not context
                    or len(context) + len(continuation) > self.max_length):
                direct.append(i)
            else:
                groups.setdefault(tuple(context), []).append(i)
        results: dict[int, tuple[float, bool]] = {}
        if direct:
            scored = super()._loglikelihood_tokens([requests[i] for i in direct],
                                                   disable_tqdm=disable_tqdm,
                                                   override_bs=override_bs)
            results.update(zip(direct, scored, strict=True))
        ordered = sorted(groups.items(), key=lambda g: -len(g[0]))  # similar lengths batch
        step = max(1, int(override_bs or self.batch_size))
        for start in range(0, len(ordered), step):
            batch = ordered[start:start + step]
            pairs = [(g, i) for g, (_, members) in enumerate(batch) for i in members]
            scored = self._score([list(context) for context, _ in batch],
                                 [(g, requests[i][2]) for g, i in pairs])
            for (_, i), result in zip(pairs, scored, strict=True):
                results[i] = result
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
        return [results[i] for i in range(len(requests))]

    def _score(self, contexts: list[list[int]],
               continuations: list[tuple[int, list[int]]]) -> list[tuple[float, bool]]:
        """(log-likelihood, greedy) of each (context index, continuation)."""
        device = self.device
        width = max(len(c) for c in contexts)
        pad = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                  else self.eot_token_id)
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts],
                            device=device)
        with torch.no_grad():
            first = self.model(input_ids=ids, attention_mask=mask, use_cache=True,
                               position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               logits_to_keep=1)
            heads = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # -> token 0
            tails: dict[int, torch.Tensor] = {}
            # continuations of similar lengths together: padding a row to a long choice
            # would cost as much as the context
            by_length = sorted(range(len(continuations)), key=lambda k: len(continuations[k][1]))
            step = len(contexts)
            for start in range(0, len(by_length), step):
                rows = by_length[start:start + step]
                tails.update(zip(rows, self._continue(first.past_key_values, mask, contexts,
                                                      [continuations[k] for k in rows]),
                                 strict=True))
        out = []
        for k, (g, continuation) in enumerate(continuations):
            logp = torch.cat([heads[g][None], tails[k]])
            target = torch.tensor(continuation, device=logp.device)
            picked = logp[torch.arange(len(continuation), device=logp.device), target]
            out.append((float(picked.sum()), bool((logp.argmax(dim=-1) == target).all())))
        return out

    def _continue(self, cache: Any, mask: torch.Tensor, contexts: list[list[int]],
                  continuations: list[tuple[int, list[int]]]) -> list[torch.Tensor]:
        """Log-probabilities after each continuation's tokens but its last, from a copy of
        its context's rows of the KV cache."""
        device = self.device
        owner = torch.tensor([g for g, _ in continuations], device=device)
        rows = copy.deepcopy(cache)
        rows.batch_select_indices(owner)  # one cache row per continuation
        steps = max(len(c) for _, c in continuations) - 1
        tokens = torch.tensor([c[:-1] + [c[-1]] * (steps - len(c) + 1)
                               for _, c in continuations], device=device)
        lengths = torch.tensor([len(contexts[g]) for g, _ in continuations], device=device)
        out = self.model(input_ids=tokens, past_key_values=rows, use_cache=True,
                         attention_mask=torch.cat([mask[owner], torch.ones_like(tokens)], 1),
                         position_ids=lengths[:, None] + torch.arange(steps, device=device))
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        return [logp[k, :len(c) - 1] for k, (_, c) in enumerate(continuations)]
