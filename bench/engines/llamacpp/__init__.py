"""The llama.cpp engine (llama-cpp-python, in process): GGUF files, the format most local
users run (directly, in Ollama, in LM Studio), on CPU or CUDA with llama.cpp's own kernels.

Every GGUF scheme of a model starts from the same source weights as its transformers schemes:
converted once to an F32 / F16 GGUF, then quantized by llama.cpp's own quantizer, both cached
(bench.engines.llamacpp.files). This __init__ is what the plan and the parent import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.core.config import choose, positive
from bench.core.errors import BenchInputError
from bench.engines.base import Capabilities, EngineSettings
from bench.engines.llamacpp.schemes import QUANT_RULES  # noqa: F401  (the registry reads it)

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

CAPABILITIES = Capabilities(
    name="llamacpp",
    quant_methods=("none", "gguf"),  # none: fp32 / fp16 / bf16 as F32 / F16 / BF16 GGUF
    default_for=("gguf",),
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
    other_tasks_note=("images: bench does not load llama.cpp's multimodal projectors "
                      "(mmproj GGUF, run by llama-cpp-python through per-model chat "
                      "handlers) yet"),
)


def needs_preparing(cfg: "BenchConfig") -> bool:
    """A GGUF file to convert or quantize first (untimed), unless it is a local file."""
    from bench.engines.llamacpp.files import ready_file

    return ready_file(cfg) is None


SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}  # llama_split_mode (llama.h)
# tokens of the evaluation context (capped at the model's own), in process and in its servers
EVAL_CONTEXT = 4096


@dataclass
class LlamaCppKnobs:
    """llama.cpp's own settings, for llama.cpp in process and for its servers."""

    n_gpu_layers: Optional[int] = None  # -ngl; null: every layer on CUDA, none on CPU
    n_batch: Optional[int] = None  # prompt tokens per llama_decode call; null: 512
    n_ubatch: Optional[int] = None  # physical batch; null: 512
    flash_attn: Optional[bool] = None  # null: off (llama-cpp-python's default); true: on
    # --split-mode: null = none, the whole model on the one GPU bench watches (llama.cpp's
    # own default, layer, spreads it over every visible GPU); layer | row to spread it on
    # purpose (the device peak then covers the first GPU only)
    split_mode: Optional[str] = None

    def partial_gpu_layers(self, layers: int) -> bool:
        """engine.n_gpu_layers below every layer (llama.cpp counts the output layer too)."""
        return self.n_gpu_layers not in (None, -1) and self.n_gpu_layers < layers + 1

    def check_knobs(self) -> None:
        if self.n_gpu_layers is not None and self.n_gpu_layers < -1:
            raise BenchInputError(f"engine.n_gpu_layers={self.n_gpu_layers} must be >= 0, "
                                  f"or -1 for every layer")
        positive("engine.n_batch", self.n_batch)
        positive("engine.n_ubatch", self.n_ubatch)
        if self.split_mode is not None:
            choose("engine.split_mode", self.split_mode, tuple(SPLIT_MODES))


@dataclass
class LlamaCppSettings(EngineSettings, LlamaCppKnobs):
    name: str = "llamacpp"
    # --repack / --no-repack (CPU weight repacking, AMX); null: on, except where llama.cpp's
    # AMX kernels run, which crash (llama.cpp issue 20824)
    repack: Optional[bool] = None

    def validate(self, cfg: "BenchConfig") -> None:
        self.check_knobs()

    def gpu_runtime(self) -> Optional[str]:
        return "llama_cpp"

    def may_keep_layers_on_host(self, layers: int) -> bool:
        return self.partial_gpu_layers(layers)

    def input_embeddings_on_device(self) -> bool:
        # llama.cpp assigns the input layer (token_embd) to the CPU whatever -ngl says
        # (llama-model.cpp: "very little benefit to offloading the input layer"); a tied
        # model's output head is a copy of it on the GPU
        return False


SETTINGS = LlamaCppSettings


def split_mode(cfg: "BenchConfig") -> int:
    """llama.cpp's split mode: none (the whole model on the main GPU, the one bench watches;
    llama.cpp's own default, layer, spreads it over every visible GPU) unless the cell asks
    to spread it over several."""
    return SPLIT_MODES[cfg.engine.split_mode or "none"]
