"""The llama.cpp engine (llama-cpp-python, in process): GGUF files, the format most local
users run (directly, in Ollama, in LM Studio), on CPU or CUDA with llama.cpp's own kernels.

Every GGUF scheme of a model starts from the same source weights as its transformers schemes:
converted once to an F32 / F16 GGUF, then quantized by llama.cpp's own quantizer, both cached
(bench.engines.llamacpp.files). This __init__ is what the plan and the parent import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.engines.base import Capabilities

if TYPE_CHECKING:
    from bench.config import BenchConfig

CAPABILITIES = Capabilities(
    name="llamacpp",
    quant_methods=("none", "gguf"),  # none: fp32 / fp16 / bf16 as F32 / F16 / BF16 GGUF
    devices=("cpu", "cuda"),
    weights=("real", "synthetic", "tiny", "packaged"),
    token_clock=True,
    allocator_peaks=False,
    offload=False,  # llama.cpp offloads by layer: engine.n_gpu_layers
    compile=False,
    max_batch_size=1,  # one sequence, as llama-bench's tg and a local chat
    synthetic_model_types=("llama", "mistral"),  # what bench's own GGUF writer builds
    kv_cache_dtype="float16",  # llama.cpp's default KV cache type
    distribution="llama-cpp-python",
)


def needs_preparing(cfg: "BenchConfig") -> bool:
    """A GGUF file to convert or quantize first (untimed), unless it is a local file."""
    from bench.engines.llamacpp.files import ready_file

    return ready_file(cfg) is None


SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}  # llama_split_mode (llama.h)


def split_mode(cfg: "BenchConfig") -> int:
    """llama.cpp's split mode: none (the whole model on the main GPU, the one bench watches;
    llama.cpp's own default, layer, spreads it over every visible GPU) unless the cell asks
    to spread it over several."""
    return SPLIT_MODES[cfg.engine.split_mode or "none"]
