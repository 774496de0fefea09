"""The server engine: start (or attach to) an OpenAI-compatible server and measure it as a
client does (bench.engines.openai.served).

Load is the server's start-up until its API lists a model (an attached server: one that
answers). A started server is of a kind (bench.engines.openai.kinds: its command line, its
version, what its log says); an attached one says what it is through its API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from bench.core.config import BenchConfig
from bench.core.errors import SkipCell
from bench.core.paths import under
from bench.engines.base import (
    Device,
    DeviceInfo,
    Engine,
    LoadedModel,
    OffloadBudget,
    card_device_info,
    nvml_sees_cuda,
)
from bench.engines.openai import CAPABILITIES
from bench.engines.openai.client import Client, ServerError
from bench.engines.openai.kinds import Command, kinds
from bench.engines.openai.served import ATTACH_TIMEOUT_S, ServedModel, server_version
from bench.engines.openai.server import ServerFailed, ServerProcess, free_port


class OpenAIEngine(Engine):
    capabilities = CAPABILITIES

    def __init__(self) -> None:
        # vLLM's --gpu-memory-utilization when a smaller GPU class is emulated
        self.gpu_memory_utilization: Optional[float] = None

    def emulate_class(self, cfg: BenchConfig, device: Device, class_bytes: int,
                      context_bytes: Optional[int]) -> Optional[dict[str, Any]]:
        """vLLM sizes everything it holds (context, weights, activations, KV cache) to a
        share of the card: the class's share emulates the class. Other servers cannot."""
        server = cfg.engine.server
        if server is None or not kinds()[server].emulates_class:
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
        """What the server will load (a GGUF file, a checkpoint, its own binary), untimed."""
        server = cfg.engine.server
        return kinds()[server].prepare(cfg) if server is not None else {}

    def load(self, cfg: BenchConfig, device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        engine = cfg.engine
        if engine.url is not None:
            key = os.environ.get(engine.api_key_env) if engine.api_key_env else None
            client = Client(engine.url, engine.api, engine.request_timeout_s, api_key=key)
            if not client.run(_lists_models(client, ATTACH_TIMEOUT_S)):
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

    served.version = served.client.run(server_version(served.client))
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
    _, body, _ = await client.get("/v1/models", ATTACH_TIMEOUT_S)
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


def command_line(cfg: BenchConfig, device: Device, python: str, port: int,
                 utilization: Optional[float] = None) -> Command:
    """The started server's command line (its kind's, then engine.server_args), the weight
    bytes it will hold, and where they come from."""
    command, weights, origin = kinds()[cfg.engine.server].command(cfg, device, python, port,
                                                                  utilization)
    return command + list(cfg.engine.server_args), weights, origin


def _start(cfg: BenchConfig, device: Device, utilization: Optional[float]) -> ServedModel:
    engine = cfg.engine
    assert engine.server is not None
    kind = kinds()[engine.server]
    port = free_port()
    python = kind.python(engine.server_python)
    command, weights, origin = command_line(cfg, device, python, port, utilization)
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
        served.gguf = kind.served_file(cfg)
        served.version = kind.version(cfg, python)
    except BaseException:
        client.close()
        server.stop()
        raise
    return served


ENGINE = OpenAIEngine()
