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
    speed_at_depth=True,
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
# the KV-cache types llama.cpp's -ctk / -ctv take (common/arg.cpp's kv_cache_types); f16 is
# its default. A quantized V cache needs flash attention.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
DEFAULT_KV_CACHE = "f16"
_UNQUANTIZED_KV = ("f32", "f16", "bf16")
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
    # the KV cache's type (-ctk / -ctv): one type for keys and values (q8_0), or K/V
    # (q8_0/q4_0); null = f16, llama.cpp's default (written out, f16 is the same cell)
    kv_cache: Optional[str] = None

    def __post_init__(self) -> None:
        # one spelling per cache, so one id: f16 (the default) is null, q8_0/q8_0 is q8_0
        if self.kv_cache is not None and self.kv_cache.count("/") == 1:
            self.kv_cache = self.kv_cache_name()
        if self.kv_cache == DEFAULT_KV_CACHE:
            self.kv_cache = None

    def kv_cache_pair(self) -> tuple[str, str]:
        """The key and value cache types (f16, f16 when unset)."""
        key, _, value = (self.kv_cache or DEFAULT_KV_CACHE).partition("/")
        return key, value or key

    def kv_cache_name(self) -> str:
        """The KV type as a row records it: q8_0, or q8_0/q4_0 when K and V differ."""
        from bench.engines.llamacpp.buffers import kv_type_name

        return kv_type_name(*self.kv_cache_pair())

    def quantizes_v(self) -> bool:
        """Whether the V cache is quantized (llama.cpp makes it only with flash attention)."""
        return self.kv_cache_pair()[1] not in _UNQUANTIZED_KV

    def kv_cache_words(self) -> str:
        """A dry run's words for a KV type other than the default."""
        return f"kv_cache={self.kv_cache_name()}" if self.kv_cache is not None else ""

    def flash_attention(self) -> Optional[bool]:
        """engine.flash_attn, turned on where the V cache is quantized (llama.cpp cannot
        make the context without it); None: llama.cpp's own default."""
        if self.flash_attn is None and self.quantizes_v():
            return True
        return self.flash_attn

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
        if self.kv_cache is not None:
            if self.kv_cache.count("/") > 1:
                raise BenchInputError(f"engine.kv_cache={self.kv_cache}: one type, or K/V "
                                      f"such as q8_0/q4_0")
            for part in self.kv_cache_pair():
                choose("engine.kv_cache", part, KV_CACHE_TYPES)
        if self.flash_attn is False and self.quantizes_v():
            raise BenchInputError(f"engine.kv_cache={self.kv_cache}: llama.cpp quantizes the "
                                  f"V cache only with flash attention (leave engine.flash_attn "
                                  f"unset or true)")

    def kv_value_bytes(self) -> Optional[tuple[float, float]]:
        """Bytes per cached key and value element at the chosen types (ggml's block sizes,
        from gguf); None at llama.cpp's default."""
        if self.kv_cache is None:
            return None
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        def per_value(name: str) -> float:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]]
            return size / block

        key, value = self.kv_cache_pair()
        return per_value(key), per_value(value)


@dataclass
class LlamaCppSettings(EngineSettings, LlamaCppKnobs):
    name: str = "llamacpp"
    # --repack / --no-repack (CPU weight repacking, AMX); null: on, except where llama.cpp's
    # AMX kernels run, which crash (llama.cpp issue 20824)
    repack: Optional[bool] = None

    def validate(self, cfg: "BenchConfig") -> None:
        self.check_knobs()

    def describe(self) -> str:
        return self.kv_cache_words()

    def kv_cache_value_bytes(self) -> Optional[tuple[float, float]]:
        return self.kv_value_bytes()

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
