"""A model behind an OpenAI-compatible API, measured as its clients see it.

Speed is streamed completions of exactly `new_tokens` tokens, timed per chunk by the client
(bench.engines.openai.client), alone or from concurrent clients. The prompt is bench's fixed
real text cut to the workload's length by the server's own count (bench.engines.openai
.calibrate); every request starts with its own number, digits reversed, so no two
consecutive prompts share a first token and no prefix cache (llama.cpp's slot, vLLM's
blocks) can skip a prefill the in-process engines pay. Memory is the server's process tree
(bench.meters.host_peaks.TreePeak; NVML per PID on CUDA); what its log says comes from its
kind (bench.engines.openai.kinds).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from bench.core.config import BenchConfig
from bench.engines.base import ClientRun, GenerationTiming, LoadedModel
from bench.engines.openai import VISION_TASKS
from bench.engines.openai.calibrate import marker, prompt_window
from bench.engines.openai.client import Client, ServerError, Streamed
from bench.engines.openai.kinds import kind
from bench.engines.openai.server import ServerProcess

CONSECUTIVE_ERRORS = 3  # a client gives up after this many failed requests in a row
REQUEST_EXIT_GRACE_S = 3.0  # a dropped connection is seen before the server's exit
ATTACH_TIMEOUT_S = 10.0


def _timing(s: Streamed, new_tokens: int, counted: Optional[int] = None) -> GenerationTiming:
    """A streamed request as figures. The token count is the server's word: its usage, else
    its finish_reason `length` (it stopped at max_tokens), else `counted` (its tokenizer
    over the text), else, for a server with none of these, the chunks (at most new_tokens)."""
    if len(s.chunk_s) < 2:
        raise ServerError(f"the server sent {len(s.chunk_s)} text chunk(s) for {new_tokens} "
                          f"tokens: it does not stream token by token, no per-token timing")
    if s.completion_tokens is not None:
        tokens = s.completion_tokens
    elif s.finish_reason == "length":  # it stopped at max_tokens: exactly new_tokens
        tokens = new_tokens
    elif counted is not None:
        tokens = min(new_tokens, counted)  # stopped early; counted, never padded
    else:
        tokens = min(new_tokens, len(s.chunk_s))
    stamps = np.asarray(s.chunk_s)
    timings = s.server_timings or {}
    return GenerationTiming(
        ttft_s=s.chunk_s[0] - s.sent_s, decode_s=s.chunk_s[-1] - s.chunk_s[0],
        token_intervals_s=tuple(np.diff(stamps).tolist()), tokens=tokens,
        e2e_s=s.done_s - s.sent_s,
        engine_prefill_s=_ms(timings.get("prompt_ms")),
        engine_prefill_tokens=timings.get("prompt_n"),
        engine_decode_s=_ms(timings.get("predicted_ms")),
        engine_decode_tokens=timings.get("predicted_n"))


def _ms(value: Any) -> Optional[float]:
    return float(value) / 1e3 if isinstance(value, (int, float)) else None


class ServedModel(LoadedModel):
    """A model behind an OpenAI-compatible API; `server` is None for an attached one."""

    def __init__(self, cfg: BenchConfig, client: Client, server: Optional[ServerProcess],
                 weights_bytes: Optional[int]) -> None:
        self._cfg = cfg
        self.client = client
        self.server = server
        self.kind = kind(server.name) if server is not None else None
        self._weights_bytes = weights_bytes
        self._base_text: Optional[str] = None
        self._numbers = itertools.count()
        self._score_check: Optional[tuple[Optional[str], str]] = None
        self.hf_id = cfg.model.hf_id
        self.version: Optional[str] = None  # the server's distribution, where bench knows it
        self.owns_processes = server is not None
        self.image_tokens: Optional[int] = None  # what the image costs, by the server's count
        self.gguf: Optional[Path] = None  # the GGUF file a llama.cpp server bench started runs
        self.slot_watch: Optional[Any] = None  # llama-server's SlotWatch while timed
        self.ollama = False  # an attached Ollama: timed through its native /api/generate
        self.ollama_sizes: dict[str, int] = {}  # its /api/ps: the model's size, on the GPU
        if cfg.model.task in VISION_TASKS:
            client.image_url = image_data_uri(cfg.workload.image)

    # --- what it is -------------------------------------------------------------------

    def weights_bytes(self) -> Optional[int]:
        return self._weights_bytes

    def pids(self) -> list[int]:
        if self.server is not None:
            return self.server.pids()
        return _listening_pids(self.client.base_url)

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server": self._describe()}
        version = self.version or self.client.run(server_version(self.client))
        if version:
            out["engine_version"] = version
        if self.gguf is not None:  # the file a llama.cpp server runs: what it really holds
            from bench.engines.llamacpp.contents import read_contents

            out.update(read_contents(self.gguf).facts())
        if self.server is not None and self.kind is not None:
            out["server_log"] = str(self.server.log_path)
            out.update(self.kind.log_facts(self.server.log_path))
        else:
            out["memory_note"] = ("attached to a server bench did not start: its host memory "
                                  "is not measured (bench does not reset the peak counters "
                                  "of processes it does not own)")
        out.update(self.ollama_sizes)
        return out

    def device_buffers_bytes(self) -> Optional[int]:
        """What a started server's log says it allocated on the GPU (llama.cpp's)."""
        if self.server is None or self.kind is None:
            return None
        return self.kind.device_buffers(self.server.log_path)

    def device_need(self, peak_bytes: int) -> dict[str, Any]:
        """What the model needs of the device where the server reserves more (vLLM)."""
        if self.server is None or self.kind is None:
            return {}
        return self.kind.device_need(self._cfg, self.server.log_path, peak_bytes)

    def _describe(self) -> str:
        if self.server is not None:
            return (f"{self.server.name} at {self.server.url} serving {self.client.model} "
                    f"(started by bench: {' '.join(self.server.command[1:])})")
        return f"attached: {self.client.base_url} serving {self.client.model}"

    # --- speed ------------------------------------------------------------------------

    def failed(self, exc: ServerError, during: str) -> Exception:
        """What a failed request means: a dead server's exit and log, or the server's
        refusal with the log's last lines (a started server), or the error itself."""
        if self.server is None:
            return exc
        self.server.check_alive(during, grace_s=REQUEST_EXIT_GRACE_S)
        return self.server.failure(f"failed {during} ({exc})")

    def calibrate(self) -> None:
        """Find the prompt window once (untimed: before the first request)."""
        if self._base_text is None:
            self._base_text, self.image_tokens = self.client.run(prompt_window(
                self.client, self._cfg))

    async def _request(self, new_tokens: int) -> GenerationTiming:
        assert self._base_text is not None, "calibrate() runs before requests"
        prompt = marker(next(self._numbers)) + self._base_text
        if self.ollama and self.client.api == "completions":
            from bench.engines.openai import ollama

            streamed = await ollama.stream(self.client, prompt, new_tokens, self._cfg.seed)
        else:
            streamed = await self.client.stream(prompt, new_tokens)
        target = self._target()
        if streamed.prompt_tokens is not None and streamed.prompt_tokens != target:
            raise ServerError(f"the server counted {streamed.prompt_tokens} prompt tokens, "
                              f"not {target}")
        counted = None
        if streamed.completion_tokens is None and streamed.finish_reason != "length":
            counted = await self.client.count_tokens(streamed.text)
        return _timing(streamed, new_tokens, counted)

    def _target(self) -> int:
        """Prompt tokens every request has by the server's count: the workload's text, and
        the image's tokens before it (a vision-language workload)."""
        return self._cfg.workload.prompt_tokens + (self.image_tokens or 0)

    def speed_facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.kind is not None and self.kind.watches_slots:
            if self.slot_watch is None:  # one client at a time: what the slots are, after
                from bench.engines.openai.kinds.llama_server import SlotWatch

                self.slot_watch = SlotWatch()
                self.client.run(self.slot_watch.look(self.client))
            out.update(self.slot_watch.facts(self._cfg))
        if self.image_tokens is not None:
            out.update({"image_tokens": self.image_tokens, "prompt_tokens": self._target()})
        return out

    def generate(self, prompt: np.ndarray, new_tokens: int) -> GenerationTiming:
        """One request (the prompt ids stand for a length: the server's prompt is text)."""
        try:
            self.calibrate()  # before the clock starts
            return self.client.run(self._request(new_tokens))
        except ServerError as exc:
            raise self.failed(exc, "a request") from exc

    def generate_concurrently(self, new_tokens: int, clients: int, per_client: int,
                              min_duration_s: float, max_per_client: int) -> ClientRun:
        try:
            self.calibrate()
        except ServerError as exc:
            raise self.failed(exc, "a request") from exc
        return self.client.run(self._clients(new_tokens, clients, per_client, min_duration_s,
                                             max_per_client))

    async def _clients(self, new_tokens: int, clients: int, per_client: int,
                       min_duration_s: float, max_per_client: int) -> ClientRun:
        done: list[tuple[float, GenerationTiming]] = []
        errors: list[str] = []
        start = time.perf_counter()

        async def one_client() -> None:
            made, failed_in_row = 0, 0
            while made < per_client or (time.perf_counter() - start < min_duration_s
                                        and made < max_per_client):
                try:
                    timing = await self._request(new_tokens)
                except ServerError as exc:
                    errors.append(str(exc)[:300])
                    if self.server is not None:  # a dead server ends the cell, with its log
                        self.server.check_alive("concurrent requests",
                                                grace_s=REQUEST_EXIT_GRACE_S)
                    failed_in_row += 1
                    if failed_in_row >= CONSECUTIVE_ERRORS:
                        return
                    continue
                failed_in_row = 0
                made += 1
                done.append((time.perf_counter(), timing))

        if self.kind is not None and self.kind.watches_slots:
            from bench.engines.openai.kinds.llama_server import SlotWatch

            self.slot_watch = watch = SlotWatch()
            finished = asyncio.Event()
            watcher = asyncio.ensure_future(watch.watch(self.client, finished))
            try:
                await asyncio.gather(*(one_client() for _ in range(clients)))
            finally:
                finished.set()
                await watcher
        else:
            await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = max((end for end, _ in done), default=time.perf_counter()) - start
        return ClientRun(tuple(t for _, t in done), wall, tuple(errors))

    # --- accuracy -----------------------------------------------------------------------

    def lm(self, batch_size: int) -> Any:
        from bench.engines.openai.lm import ServerLM

        return ServerLM(self, batch_size)

    def cannot_score(self) -> Optional[str]:
        if self._score_check is None:
            from bench.engines.openai.lm import check_prompt_logprobs

            self._score_check = self.client.run(check_prompt_logprobs(
                self.client, self._cfg, self.kind.logprobs_issue if self.kind else ""))
        return self._score_check[0]

    def score_check(self) -> Optional[str]:
        """What the prompt log-probability self-test found (after cannot_score ran)."""
        return self._score_check[1] if self._score_check else None

    def logprobs(self, token_ids: Sequence[int], last: Optional[int] = None) -> np.ndarray:
        raise NotImplementedError("a server's API returns its top few log-probabilities "
                                  "only, not the whole next-token distribution")

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


async def server_version(client: Client) -> Optional[str]:
    """What the server says it is: vLLM's /version, Ollama's /api/version, else its
    Server header."""
    header = None
    for path in ("/version", "/api/version"):
        try:
            status, body, headers = await client.get(path, ATTACH_TIMEOUT_S)
        except Exception:  # an endpoint it does not have, or no answer: try the next
            continue
        header = header or headers.get("Server")
        if status == 200 and '"version"' in body:
            version = json.loads(body).get("version")
            if version:
                return f"{path.strip('/')} {version}"
    return f"Server: {header}" if header else None


def _listening_pids(url: str) -> list[int]:
    """The local process listening on an attached server's port, and its children."""
    from urllib.parse import urlparse

    import psutil

    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        return []
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return []
    roots = {c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr
             and c.laddr.port == port and c.pid}
    out: list[int] = []
    for pid in roots:
        try:
            out += [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            continue
    return out


def image_data_uri(name: Optional[str]) -> str:
    """The workload's photograph as a PNG data URI, as a chat client sends a local image."""
    import base64
    import io

    from bench.data.images import DEFAULT_IMAGE, load_image

    buffer = io.BytesIO()
    load_image(name or DEFAULT_IMAGE).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
