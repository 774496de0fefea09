"""lm-eval's `LM` over an OpenAI-compatible server, and the self-test that decides whether
its prompt log-probabilities may score anything.

Generation tasks (HumanEval) always work: greedy completions with the task's stop strings.
Log-likelihood tasks (MMLU) use the completions API's `echo` + `logprobs`, as lm-eval's
`local-completions` model does, but only after the server passed a self-test: the same
tokens scored by two paths of the server must agree. Path one: the server generates a few
greedy tokens after a fixed real prompt and returns each one's log-probability. Path two:
prompt and those tokens together are sent back with `echo`, and the server scores its own
prompt. A server whose echoed log-probabilities are misaligned (llama-cpp-python's server
is shifted by one token, its issue 1983) disagrees by nats; a correct one (vLLM) agrees to
rounding. The continuation's tokens are found by their text offsets, so no local tokenizer
is needed.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import TYPE_CHECKING, Any, Optional, Protocol

from lm_eval.api.model import LM

from bench.engines.base import GreedyRequest
from bench.engines.openai.client import Client, ServerError

if TYPE_CHECKING:
    from bench.core.config import BenchConfig


class Served(Protocol):
    """What the LM needs of a served model (bench.engines.openai.served.ServedModel)."""

    client: Client

    def failed(self, exc: ServerError, during: str) -> Exception: ...

    def cannot_score(self) -> Optional[str]: ...

MAX_STOPS = 4  # the OpenAI API's limit on stop strings; the rest are cut here
CHECK_TOKENS = 8  # tokens generated and then scored again by the self-test
MEDIAN_TOLERANCE = 0.05  # nats: rounding and batch-shape differences, not a misalignment
MAX_TOLERANCE = 0.5


def _logprobs(answer: dict[str, Any]) -> Optional[dict[str, Any]]:
    choices = answer.get("choices") or [{}]
    return choices[0].get("logprobs") or None


async def check_prompt_logprobs(client: Client, cfg: "BenchConfig",
                                known_issue: str = "") -> tuple[Optional[str], str]:
    """(why log-likelihoods through this server are refused or None, what was found);
    `known_issue`: what the refusal adds where the server's kind has a known defect."""
    if client.api == "chat":
        reason = "engine.api=chat: chat completions return no prompt log-probabilities"
        return reason, reason
    from bench.data.text import text

    words = " ".join(text(cfg.resolved_cache_dir).split()).split(" ")
    prompt = " ".join(words[:40])
    try:
        generated = await client.complete(prompt, CHECK_TOKENS, logprobs=1)
        gen = _logprobs(generated)
        if not gen or not gen.get("tokens"):
            reason = "the server returns no log-probabilities (completions with logprobs)"
            return reason, reason
        continuation = generated["choices"][0]["text"]
        echoed = await client.complete(prompt + continuation, 1, echo=True, logprobs=1)
    except ServerError as exc:
        reason = f"the prompt log-probability self-test failed: {exc}"
        return reason, reason
    echo = _logprobs(echoed)
    if not echo or not echo.get("text_offset"):
        reason = "the server does not echo prompt log-probabilities (echo + logprobs)"
        return reason, reason
    pairs = _aligned(gen, echo, len(prompt), len(prompt) + len(continuation))
    if len(pairs) < 3:
        reason = (f"the self-test could align {len(pairs)} of {CHECK_TOKENS} tokens between "
                  f"generation and echo: prompt log-probabilities unchecked")
        return reason, reason
    diffs = [abs(a - b) for a, b in pairs]
    found = (f"echo vs generation log-probabilities over {len(pairs)} tokens: median |diff| "
             f"{statistics.median(diffs):.4f}, max {max(diffs):.4f} nats")
    if statistics.median(diffs) <= MEDIAN_TOLERANCE and max(diffs) <= MAX_TOLERANCE:
        return None, found
    return (f"the server's prompt log-probabilities disagree with its own generation's "
            f"({found}){known_issue}: log-likelihood tasks not scored"), found


def _aligned(gen: dict[str, Any], echo: dict[str, Any], start: int,
             end: int) -> list[tuple[float, float]]:
    """(generation's, echo's) log-probability of each generated token found, in order, among
    the echoed prompt's tokens between the two text offsets."""
    echoed = [(tok, lp) for tok, lp, off in zip(echo["tokens"], echo["token_logprobs"],
                                                 echo["text_offset"], strict=False)
              if start <= off < end and lp is not None]
    pairs = []
    for (tok, lp), (etok, elp) in zip(zip(gen["tokens"], gen["token_logprobs"],
                                           strict=False), echoed, strict=False):
        if tok != etok or lp is None:
            break
        pairs.append((float(lp), float(elp)))
    return pairs


class ServerLM(LM):
    """lm-eval requests sent to the server, `batch_size` at a time (the server batches or
    queues them as it would any clients')."""

    def __init__(self, served: Served, batch_size: int) -> None:
        super().__init__()
        self._served = served
        self._client = served.client
        self._batch = batch_size

    def _gather(self, coros: list[Any]) -> list[Any]:
        async def run() -> list[Any]:
            out: list[Any] = []
            for i in range(0, len(coros), self._batch):
                out += await asyncio.gather(*coros[i:i + self._batch])
            return out

        try:
            return self._client.run(run())
        except ServerError as exc:
            raise self._served.failed(exc, "evaluation") from exc

    async def _score(self, context: str, continuation: str) -> tuple[float, bool]:
        answer = await self._client.complete(context + continuation, 1, echo=True, logprobs=1)
        echo = _logprobs(answer)
        if not echo:
            raise ServerError("the server returned no prompt log-probabilities")
        start, end = len(context), len(context) + len(continuation)
        total, greedy, seen = 0.0, True, 0
        for tok, lp, off, top in zip(echo["tokens"], echo["token_logprobs"],
                                     echo["text_offset"], echo.get("top_logprobs") or [],
                                     strict=False):
            if not start <= off < end or lp is None:
                continue
            seen += 1
            total += float(lp)
            if top and max(top, key=top.get) != tok:
                greedy = False
        if not seen:
            raise ServerError(f"no echoed token falls in the continuation {continuation!r}")
        return total, greedy

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        refusal = self._served.cannot_score()
        if refusal:
            raise RuntimeError(refusal)
        out = self._gather([self._score(*req.args) for req in requests])
        for req, result in zip(requests, out, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return out

    def loglikelihood_rolling(self, requests: list[Any],
                              disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("rolling log-likelihoods are not measured through a server")

    async def _generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        request = GreedyRequest.of(gen_kwargs, "server")
        extra = {"stop": list(request.until[:MAX_STOPS])} if request.until else {}
        answer = await self._client.complete(context, request.max_gen, **extra)
        choices = answer.get("choices") or [{}]
        text = choices[0].get("text")
        if text is None:
            text = (choices[0].get("message") or {}).get("content") or ""
        return request.cut(text)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = self._gather([self._generate(*req.args) for req in requests])
        for req, text in zip(requests, out, strict=True):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out
