"""An OpenAI-compatible HTTP client that times what a user of the server sees.

Requests stream (server-sent events); the client stamps every chunk that carries text on
arrival with `time.perf_counter()`, so TTFT is request sent -> first text, and the gaps
between chunks are the inter-token latencies a reader of the stream feels (as vLLM's
serving benchmark and GuideLLM time them). The token count never comes from counting
chunks: it is the server's `usage`, else the server's own `finish_reason == "length"` (it
stopped at max_tokens), else the server's tokenizer over the text. One event loop and one
connection pool live as long as the client, so no request pays for a connection setup
the others did not.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

import aiohttp

from bench.core.secrets import strip_credentials

# llama.cpp's server, Ollama, LM Studio, vLLM: each ignores the keys it does not know.
# min_tokens (llama-cpp-python, vLLM) and ignore_eos (vLLM) make the server generate exactly
# max_tokens; where neither is known, a short answer is counted and recorded, never padded.
_EXACT = {"temperature": 0.0, "top_p": 1.0, "seed": 0}


class ServerError(RuntimeError):
    """The server refused or broke a request (HTTP error, dropped connection, bad stream)."""


@dataclass(frozen=True)
class Streamed:
    """One streamed request as the client saw it (perf_counter seconds)."""

    sent_s: float
    chunk_s: tuple[float, ...]  # arrival of every chunk that carried text
    done_s: float  # the stream's end
    text: str
    finish_reason: Optional[str]
    completion_tokens: Optional[int]  # the server's usage, where it sends one
    prompt_tokens: Optional[int]
    server_timings: Optional[dict[str, Any]]  # llama.cpp's server: its own prompt/predict ms


class Client:
    """Requests to one server's /v1 API, from a private event loop (call from one thread)."""

    def __init__(self, base_url: str, api: str, timeout_s: float,
                 api_key: Optional[str] = None) -> None:
        parts = urlsplit(base_url)
        # credentials leave the URL: they go in the Authorization header, never in a message
        self.base_url = strip_credentials(base_url).rstrip("/")
        self._auth = (aiohttp.BasicAuth(unquote(parts.username or ""),
                                        unquote(parts.password or ""))
                      if parts.username or parts.password else None)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api = api
        self.model: Optional[str] = None
        # a vision-language workload's image (a data URI) every chat request carries first
        self.image_url: Optional[str] = None
        self.timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._loop = asyncio.new_event_loop()
        self.session: aiohttp.ClientSession = self.run(self._open())

    async def _open(self) -> aiohttp.ClientSession:
        # a connection per request: servers close kept-alive connections on their own terms
        # (llama-server's HTTP library after 5 requests or 5 s idle), and aiohttp then fails
        # to write the next request on the closed one; a loopback connect costs microseconds
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        return aiohttp.ClientSession(connector=connector,
                                     timeout=self._timeout, auth=self._auth,
                                     headers=self._headers)

    # --- plumbing ------------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        """Run a coroutine of this client's on its loop (blocking)."""
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if not self._loop.is_closed():
            self.run(self.session.close())
            self._loop.close()

    async def get(self, path: str, timeout_s: Optional[float] = None) -> tuple[int, str, dict]:
        """(status, body, headers) of a GET; raises aiohttp/OS errors when unreachable."""
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        async with self.session.get(self.base_url + path, timeout=timeout) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.session.post(self.base_url + path, json=body) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise ServerError(f"POST {path} answered HTTP {resp.status}: {text[:300]}")
                answer = json.loads(text)
                if not isinstance(answer, dict):
                    raise ServerError(f"POST {path} answered {type(answer).__name__}, not an "
                                      f"object")
                return answer
        except asyncio.TimeoutError:
            raise ServerError(f"POST {path}: no answer within engine.request_timeout_s="
                              f"{self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ServerError(f"POST {path} failed: {type(exc).__name__}: "
                              f"{exc or 'no detail'}") from exc

    # --- requests ------------------------------------------------------------------------

    def _body(self, prompt: str, max_tokens: int, image: bool = True,
              **extra: Any) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, **_EXACT, **extra}
        if self.api == "chat":
            content: Any = prompt
            if self.image_url is not None and image:  # OpenAI's image content part
                content = [{"type": "image_url", "image_url": {"url": self.image_url}},
                           {"type": "text", "text": prompt}]
            body["messages"] = [{"role": "user", "content": content}]
            return "/v1/chat/completions", body
        body["prompt"] = prompt
        return "/v1/completions", body

    async def complete(self, prompt: str, max_tokens: int, image: bool = True,
                       **extra: Any) -> dict[str, Any]:
        """A whole (non-streamed) completion's JSON (`image`: with the workload's image)."""
        path, body = self._body(prompt, max_tokens, image, **extra)
        return await self.post(path, body)

    async def prompt_tokens(self, prompt: str, image: bool = True) -> int:
        """The prompt's length in the server's own tokens (its usage for a 1-token answer),
        the image's included where the request carries one."""
        usage = (await self.complete(prompt, 1, image)).get("usage") or {}
        if not isinstance(usage.get("prompt_tokens"), int):
            raise ServerError("the server reports no usage.prompt_tokens: bench cannot make "
                              "a prompt of an exact length for it")
        return int(usage["prompt_tokens"])

    async def count_tokens(self, text: str) -> Optional[int]:
        """`text` in the server's own tokens, where it has a tokenize endpoint (vLLM's
        /tokenize, llama-cpp-python's /extras/tokenize); None where it has none."""
        for path, body, key in (("/tokenize", {"model": self.model, "prompt": text,
                                               "add_special_tokens": False}, "count"),
                                ("/extras/tokenize", {"input": text}, "tokens")):
            try:
                answer = await self.post(path, body)
            except ServerError:
                continue
            value = answer.get(key)
            if isinstance(value, int):
                return value
            if isinstance(value, list):
                return len(value)
            # an answer without the count: unknown, never 0 (try the next endpoint)
        return None

    async def stream(self, prompt: str, new_tokens: int) -> Streamed:
        """Greedy, exactly `new_tokens` tokens where the server allows it, streamed. A stream
        that breaks (not UTF-8, not JSON, no answer within the timeout, cut off before its
        end) is a ServerError with the reason: a failed request, never a short success."""
        # cache_prompt: llama-server keeps a slot's KV cache and reuses whatever of a new
        # prompt matches it; every timed request must process its whole prompt
        path, body = self._body(prompt, new_tokens, stream=True, min_tokens=new_tokens,
                                ignore_eos=True, stream_options={"include_usage": True},
                                cache_prompt=False)
        chunks: list[float] = []
        parts: list[str] = []
        finish = None
        usage: dict[str, Any] = {}
        timings = None
        ended = False
        sent = time.perf_counter()
        try:
            async with self.session.post(self.base_url + path, json=body) as resp:
                if resp.status != 200:
                    raise ServerError(f"POST {path} answered HTTP {resp.status}: "
                                      f"{(await resp.text())[:300]}")
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        ended = True
                        break
                    now = time.perf_counter()
                    event = json.loads(data.decode("utf-8"))
                    if not isinstance(event, dict):
                        raise ServerError(f"the stream sent {type(event).__name__}, not an "
                                          f"event object")
                    if "error" in event:
                        raise ServerError(f"the server's stream says: {event['error']}")
                    for choice in event.get("choices") or []:
                        text = _chunk_text(choice)
                        if text:
                            chunks.append(now)
                            parts.append(text)
                        finish = choice.get("finish_reason") or finish
                    usage = event.get("usage") or usage
                    timings = event.get("timings") or timings
        except asyncio.TimeoutError:
            raise ServerError(f"streaming {path}: no complete answer within "
                              f"engine.request_timeout_s={self.timeout_s:g} s "
                              f"({len(chunks)} chunks received)") from None
        except UnicodeDecodeError as exc:
            raise ServerError(f"streaming {path}: the server sent bytes that are not UTF-8 "
                              f"({exc.reason} at byte {exc.start})") from exc
        except (aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
            raise ServerError(f"streaming {path} failed: {type(exc).__name__}: "
                              f"{exc or 'no detail'}") from exc
        if not ended and finish is None:
            raise ServerError(f"streaming {path}: the stream ended after {len(chunks)} chunks "
                              f"without [DONE] or a finish_reason: the server cut it short")
        done = time.perf_counter()
        return Streamed(sent_s=sent, chunk_s=tuple(chunks), done_s=done, text="".join(parts),
                        finish_reason=finish,
                        completion_tokens=_int(usage.get("completion_tokens")),
                        prompt_tokens=_int(usage.get("prompt_tokens")), server_timings=timings)


def _chunk_text(choice: dict[str, Any]) -> str:
    if "text" in choice:
        return choice.get("text") or ""
    return (choice.get("delta") or {}).get("content") or ""


def _int(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, int) else None
