"""lm-eval's `LM` over a llama.cpp model in this process: the same tasks as transformers.

Log-likelihoods come from llama.cpp's own logits of every position (`logits_all` + `eval`,
read from `scores`), never from llama-cpp-python's `echo` + `logprobs`, which are shifted by
one token (llama-cpp-python issue 1983). Tokenization follows lm-eval's HFLM: its
TemplateLM splits context and continuation, and the BOS token is added exactly when the
model's tokenizer adds it. Requests are scored in token order so that those sharing a
prefix (MMLU's four choices, a subject's few-shot examples) reuse llama.cpp's KV cache
instead of evaluating it again; results come back in request order. Generation is greedy,
token by token, until a stop string, the end-of-sequence token or max_gen_toks.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from lm_eval import utils
from lm_eval.api.model import TemplateLM

from bench.engines.base import GreedyRequest


def log_softmax(rows: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable), as float32."""
    rows = np.asarray(rows, dtype=np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


class LlamaCppLM(TemplateLM):
    """An lm-eval model backed by a llama_cpp.Llama opened with logits_all=True."""

    def __init__(self, llm: Any, batch_size: int) -> None:
        import llama_cpp

        super().__init__()
        self.llm = llm
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._eos = int(llama_cpp.llama_vocab_eos(vocab))
        self._bos = int(llama_cpp.llama_vocab_bos(vocab))
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._bos_text = self.tok_decode([self._bos]) if self._bos >= 0 else ""
        self.batch_size = batch_size  # recorded; llama.cpp scores one sequence at a time
        self.max_length = int(llm.n_ctx())

    @property
    def eot_token_id(self) -> int:
        return self._eos

    @property
    def prefix_token_id(self) -> int:
        return self._bos if self._bos >= 0 else self._eos

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        add_bos = self._add_bos if add_special_tokens is None else bool(add_special_tokens)
        if add_special_tokens is None and self._bos_text and string.startswith(self._bos_text):
            add_bos = False  # HFLM: the string already starts with BOS
        return list(self.llm.tokenize(string.encode("utf-8"), add_bos=add_bos, special=True))

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens), special=True).decode("utf-8", errors="replace")

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """llama.cpp's logits at every position of `tokens`, evaluating only what the KV cache
        does not already hold for their longest common prefix with the last call."""
        llm = self.llm
        tokens = list(tokens)
        if len(tokens) > self.max_length:
            raise ValueError(f"{len(tokens)} tokens exceed the context of {self.max_length}")
        held = llm.input_ids[: llm.n_tokens]
        common = 0
        limit = min(len(held), len(tokens))
        if limit:
            differ = np.nonzero(held[:limit] != np.asarray(tokens[:limit]))[0]
            common = int(differ[0]) if differ.size else limit
        llm.n_tokens = common  # eval() drops the KV cache beyond this position
        if common < len(tokens):
            llm.eval(tokens[common:])
        return llm.scores[: len(tokens)]

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: requests[i][1] + requests[i][2])
        for i in order:
            key, context, continuation = requests[i]
            whole = (context + continuation)[-(self.max_length + 1):]
            inputs = whole[:-1]
            rows = self.logits(inputs)[len(inputs) - len(continuation):]
            logp = log_softmax(rows)
            picked = logp[np.arange(len(continuation)), continuation]
            greedy = bool((rows.argmax(axis=-1) == np.asarray(continuation)).all())
            results[i] = (float(picked.sum()), greedy)
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, results[i])
        return results

    def loglikelihood_rolling(self, requests: list[Any],
                              disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scores over disjoint windows, as HFLM computes them."""
        out = []
        for (string,) in [req.args for req in requests]:
            windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))
            scores = self._loglikelihood_tokens([(None, *w) for w in windows])
            total = sum(score for score, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            out.append(total)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, gen_kwargs in [req.args for req in requests]:
            request = GreedyRequest.of(gen_kwargs, "llama.cpp")
            prompt = self.tok_encode(context)[-(self.max_length - request.max_gen):]
            text = self._greedy(prompt, request)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    def _greedy(self, prompt: list[int], request: GreedyRequest) -> str:
        """Greedy tokens until a stop string (cut there), end of sequence or max_gen."""
        logits = self.logits(prompt)
        generated: list[int] = []
        text = ""
        for _ in range(request.max_gen):
            token = int(logits[-1].argmax())
            if token == self._eos:
                break
            generated.append(token)
            text = self.tok_decode(generated)
            cut = request.cut(text)
            if cut != text:
                return cut
            logits = self.logits(prompt + generated)
        return text
