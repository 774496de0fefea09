"""llama.cpp's own HTTP server, `llama-server` (what Ollama runs underneath and what
llama.cpp users deploy): parallel slots with continuous batching, unlike llama-cpp-python's
server, which answers one request at a time.

bench builds the binary from the same llama.cpp the engine runs (bench.engines.llamacpp.tools)
and starts it on the cell's GGUF file with one slot per concurrent client unless
engine.slots says otherwise; each slot holds the context the llama_cpp engine would give one
sequence. While the clients run, its /metrics (requests deferred, busy slots per decode) and
/slots (tokens held per slot) are sampled, so the row says whether requests waited for a
slot and how full the KV cache got.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from bench.core.config import positive
from bench.engines.openai.kinds import Command
from bench.engines.openai.kinds.gguf import GgufServer, gguf_bytes

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Device
    from bench.engines.openai.client import Client

SAMPLE_S = 0.25  # between two looks at /metrics and /slots while requests run
_METRIC_PREFIX = "llamacpp:"


def slots(cfg: "BenchConfig") -> int:
    """Parallel slots: engine.slots, else one per concurrent client."""
    return int(cfg.engine.slots or cfg.workload.concurrency)


def slot_context(cfg: "BenchConfig", context: int) -> int:
    """Tokens per slot: what one sequence gets in the in-process engine (`context`), capped
    at the model's own."""
    return min(int(cfg.model.arch.max_position_embeddings), context)


def command(cfg: "BenchConfig", device: "Device", binary: Path, model: Path, host: str,
            port: int, context: int, threads: int) -> list[str]:
    """llama-server's command line for the cell (engine.server_args appended by the caller)."""
    engine = cfg.engine
    layers = engine.n_gpu_layers if engine.n_gpu_layers is not None else (
        -1 if device.type == "cuda" else 0)
    n = slots(cfg)
    out = [str(binary), "--model", str(model), "--alias", cfg.model.name, "--host", host,
           "--port", str(port), "--parallel", str(n), "--cont-batching",
           "--ctx-size", str(n * slot_context(cfg, context)), "--no-kv-unified",
           "--threads", str(threads), "--threads-batch", str(threads),
           "--n-gpu-layers", str(layers), "--seed", str(cfg.seed), "--metrics", "--slots",
           "--no-webui"]
    if device.type == "cuda":
        out += ["--split-mode", engine.split_mode or "none", "--main-gpu", "0"]
    for key, flag in (("n_batch", "--batch-size"), ("n_ubatch", "--ubatch-size")):
        if getattr(engine, key) is not None:
            out += [flag, str(getattr(engine, key))]
    if engine.flash_attention() is not None:
        out += ["--flash-attn", "on" if engine.flash_attention() else "off"]
    if engine.kv_cache is not None:
        key, value = engine.kv_cache_pair()
        out += ["--cache-type-k", key, "--cache-type-v", value]
    return out


def parse_metrics(text: str) -> dict[str, float]:
    """llama-server's Prometheus text: `llamacpp:name value` lines, by name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(_METRIC_PREFIX) and "{" not in line:
            name, _, value = line[len(_METRIC_PREFIX):].partition(" ")
            try:
                out[name] = float(value.strip())
            except ValueError:
                continue
    return out


def slots_use(payload: Any) -> tuple[int, int, int]:
    """(tokens the busy slots hold, the slots' whole context, context per slot) from /slots."""
    held = capacity = per_slot = 0
    for slot in payload if isinstance(payload, list) else []:
        n_ctx = int(slot.get("n_ctx") or 0)
        capacity += n_ctx
        per_slot = max(per_slot, n_ctx)
        if slot.get("is_processing"):
            decoded = sum(int(t.get("n_decoded") or 0) for t in slot.get("next_token") or [])
            held += int(slot.get("n_prompt_tokens") or 0) + decoded
    return held, capacity, per_slot


@dataclass
class SlotWatch:
    """What /metrics and /slots showed while requests ran (the most at once)."""

    deferred_max: int = 0
    kv_use_max: float = 0.0
    slot_ctx: Optional[int] = None
    busy_per_decode: Optional[float] = None
    looks: int = 0
    during_run: bool = False  # sampled while requests ran (else once, after)
    problems: list[str] = field(default_factory=list)

    def facts(self, cfg: "BenchConfig") -> dict[str, Any]:
        out: dict[str, Any] = {"server_slots": slots(cfg)}
        if self.slot_ctx:
            out["server_slot_ctx"] = self.slot_ctx
        if self.looks and self.during_run:
            out.update({"server_deferred_max": self.deferred_max,
                        "server_kv_use_max": round(self.kv_use_max, 4)})
        if self.busy_per_decode is not None:
            out["server_busy_slots_per_decode"] = round(self.busy_per_decode, 3)
        return out

    async def look(self, client: "Client") -> None:
        """One sample of both endpoints (a failing endpoint is noted, not fatal)."""
        try:
            status, body, _ = await client.get("/metrics", 5.0)
            if status == 200:
                metrics = parse_metrics(body)
                self.deferred_max = max(self.deferred_max,
                                        int(metrics.get("requests_deferred", 0)))
                if "n_busy_slots_per_decode" in metrics:
                    self.busy_per_decode = metrics["n_busy_slots_per_decode"]
            status, body, _ = await client.get("/slots", 5.0)
            if status == 200:
                held, capacity, per_slot = slots_use(json.loads(body))
                if capacity:
                    self.kv_use_max = max(self.kv_use_max, held / capacity)
                    self.slot_ctx = per_slot
            self.looks += 1
        except Exception as exc:  # the server's answer, not bench's run, is in doubt
            self.problems.append(f"{type(exc).__name__}: {exc}"[:200])

    async def watch(self, client: "Client", done: asyncio.Event) -> None:
        """Sample until `done` is set, then once more (the busy-slot average is cumulative)."""
        self.during_run = True
        while not done.is_set():
            await self.look(client)
            try:
                await asyncio.wait_for(done.wait(), SAMPLE_S)
            except asyncio.TimeoutError:
                pass
        await self.look(client)


@dataclass(frozen=True)
class LlamaServer(GgufServer):
    def check(self, cfg: "BenchConfig") -> None:
        positive("engine.slots", cfg.engine.slots)

    def needs_preparing(self, cfg: "BenchConfig") -> bool:
        from bench.engines.llamacpp.tools import built

        if built(cfg.resolved_cache_dir, "llama-server") is None:
            return True  # the binary is built in the prepare step
        return super().needs_preparing(cfg)

    def python(self, configured: Optional[str]) -> str:
        return ""  # a program of its own, not a Python module

    def prepare(self, cfg: "BenchConfig") -> dict[str, Any]:
        from bench.engines.llamacpp.tools import ensure_tool

        ensure_tool(cfg.resolved_cache_dir, "llama-server")
        return super().prepare(cfg)

    def command(self, cfg: "BenchConfig", device: "Device", python: str, port: int,
                utilization: Optional[float]) -> Command:
        from bench.engines.base import cpu_threads
        from bench.engines.llamacpp import EVAL_CONTEXT
        from bench.engines.llamacpp.tools import ensure_tool
        from bench.engines.openai.server import HOST

        file = self.file(cfg)
        binary = ensure_tool(cfg.resolved_cache_dir, "llama-server")  # built in prepare
        return (command(cfg, device, binary, file.path, HOST, port, EVAL_CONTEXT,
                        cpu_threads(cfg)), gguf_bytes(file.path), file.origin)

    def version(self, cfg: "BenchConfig", python: str) -> Optional[str]:
        """What the binary says it is, and what it was built from."""
        from bench.engines.llamacpp.tools import build_record

        record = build_record(cfg.resolved_cache_dir)
        said = str(record.get("version") or "").splitlines()
        first = next((line for line in said if line.startswith("version")), "")
        return (f"llama-server {first.removeprefix('version: ')} built from llama-cpp-python "
                f"{record.get('llama_cpp_python')} sources (sdist sha256 "
                f"{str(record.get('sdist_sha256'))[:12]}; "
                f"{' '.join(record.get('cmake_args', []))})").strip()


KIND = LlamaServer(
    "llama_server", "llama.cpp's own llama-server: parallel slots, continuous batching; "
                    "built from the engine's llama.cpp on first use (minutes, cached)",
    methods=("none", "gguf"), weights=("real", "synthetic", "tiny", "packaged"),
    own_settings=("slots",), watches_slots=True)
