"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on the cell's
GGUF file: one request at a time, each to its end, in this environment's llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.engines.openai.kinds import Command, installed_version
from bench.engines.openai.kinds.gguf import GgufServer, gguf_bytes

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Device


@dataclass(frozen=True)
class LlamaCppServer(GgufServer):
    def command(self, cfg: "BenchConfig", device: "Device", python: str, port: int,
                utilization: Optional[float]) -> Command:
        from bench.engines.base import cpu_threads
        from bench.engines.llamacpp import EVAL_CONTEXT, split_mode
        from bench.engines.openai.server import HOST

        engine, file = cfg.engine, self.file(cfg)
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
        for key in ("n_batch", "n_ubatch"):
            if getattr(engine, key) is not None:
                command += [f"--{key}", str(getattr(engine, key))]
        if engine.flash_attention() is not None:
            command += ["--flash_attn", str(engine.flash_attention())]
        if engine.kv_cache is not None:
            from bench.engines.llamacpp.kv_cache import ggml_types

            key_type, value_type = ggml_types(engine.kv_cache_pair())
            command += ["--type_k", str(key_type), "--type_v", str(value_type)]
        return command, gguf_bytes(file.path), file.origin

    def version(self, cfg: "BenchConfig", python: str) -> Optional[str]:
        return installed_version(python, ("llama-cpp-python",))


KIND = LlamaCppServer(
    "llama_cpp", "llama-cpp-python's server: one request at a time", methods=("none", "gguf"),
    weights=("real", "synthetic", "tiny", "packaged"), gpu_runtime="llama_cpp",
    logprobs_issue=" (llama-cpp-python's server shifts echo log-probabilities by one token: "
                   "its issue 1983)")
