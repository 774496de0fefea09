"""The server engine: any OpenAI-compatible HTTP server, measured from the outside as its
clients see it (streamed completions), alone or under concurrent load.

bench either starts the server for the cell (engine.server: llama-cpp-python's server on the
cell's GGUF file, or vLLM's OpenAI API server on its checkpoint) and stops it afterwards,
or attaches to one already running (engine.url: Ollama, LM Studio, a remote vLLM). Memory
is the server's whole process tree; accuracy goes through the same lm-eval tasks over HTTP,
with log-likelihoods only where a self-test at start shows the server's prompt
log-probabilities are right. This __init__ is what the plan and the parent import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.engines.base import Capabilities
from bench.errors import BenchInputError

if TYPE_CHECKING:
    from bench.config import BenchConfig

CAPABILITIES = Capabilities(
    name="openai",
    # any scheme a server may run; the started servers narrow this (check_runs below)
    quant_methods=("none", "bnb", "gptq", "awq", "torchao", "hqq", "gguf"),
    devices=("cpu", "cuda"),
    weights=("real", "synthetic", "tiny", "packaged"),
    token_clock=True,  # the client's clock on every streamed chunk
    allocator_peaks=False,
    offload=False,
    compile=False,
    max_batch_size=1,  # one sequence per request; load comes from concurrent clients
    synthetic_model_types=("llama", "mistral"),  # what bench's GGUF writer builds (llama_cpp)
    kv_cache_dtype=None,
    distribution="llama-cpp-python",  # the llama_cpp server's; others say their own version
    max_concurrency=None,
    full_logprobs=False,
)

# What each server bench starts can run: quant methods and model sources.
SERVER_METHODS = {"llama_cpp": ("none", "gguf"), "vllm": ("none",)}
SERVER_WEIGHTS = {"llama_cpp": ("real", "synthetic", "tiny", "packaged"),
                  "vllm": ("real", "tiny", "packaged")}


def check_runs(cfg: "BenchConfig") -> None:
    """Refuse a scheme or weights the chosen server cannot serve (plan time, one line)."""
    server = cfg.engine.server
    if server is None:  # attached: the server runs what it runs; the row records its word
        if cfg.resolved_weights == "synthetic":
            raise BenchInputError("weights=synthetic cannot be attached to (engine.url): the "
                                  "server serves its own weights; use weights=real")
        return
    if cfg.quant.method not in SERVER_METHODS[server]:
        raise BenchInputError(f"engine.server={server} cannot run quant={cfg.quant.name} "
                              f"(method {cfg.quant.method}); it runs methods: "
                              f"{', '.join(SERVER_METHODS[server])}")
    if cfg.resolved_weights not in SERVER_WEIGHTS[server]:
        raise BenchInputError(f"weights={cfg.resolved_weights} is not supported by "
                              f"engine.server={server}; valid: "
                              f"{', '.join(SERVER_WEIGHTS[server])}")


def needs_preparing(cfg: "BenchConfig") -> bool:
    """The file or checkpoint a started server loads, built untimed first (as the in-process
    engines do); nothing for an attached server."""
    if cfg.engine.server == "llama_cpp":
        from bench.engines.llamacpp import needs_preparing as gguf_needed

        return gguf_needed(cfg)
    if cfg.engine.server == "vllm":
        from bench.engines.hf import needs_preparing as checkpoint_needed

        return checkpoint_needed(cfg)
    return False
