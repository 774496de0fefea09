"""The engine interface: what every engine implements and what it declares it can do.

A cell is engine-independent (bench.sweep.cell): it asks the engine for a device, loads the model
through it, measures memory and speed through the handle it gets back, and evaluates
accuracy through the handle's lm-eval `LM`. Only the engine knows its library. Like
lm-eval's `LM` and optimum-benchmark's backend base class, the interface is small; unlike
them, every engine also declares its capabilities as data, so the plan can refuse an
impossible engine x scheme x device combination before anything loads.

This module imports no heavy library: the registry and the plan read it in every process.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

if TYPE_CHECKING:
    import numpy as np

    from bench.core.config import BenchConfig


@dataclass
class EngineSettings:
    """An engine's own settings: each engine subclasses it in its package (conf/engine/
    <name>.yaml starts from `<name>_settings`), checks them in `validate`, and nothing
    outside the package knows its fields (optimum-benchmark's per-backend config)."""

    name: str = ""

    def validate(self, cfg: "BenchConfig") -> None:
        """Refuse, in one line, values this engine cannot take (BenchInputError)."""
        return None

    def describe(self) -> str:
        """What a dry run's cell line says of these settings beside the engine's name."""
        return ""

    def offloads(self) -> bool:
        """Whether these settings place part of the model in host RAM (a memory-saving mode
        of the engine's own; the row's `offload`)."""
        return False

    def may_keep_layers_on_host(self, layers: int) -> bool:
        """Whether, on a GPU, these settings may leave part of a `layers`-layer model in host
        RAM (the engine's own offload): no device bound then holds for the cell."""
        return self.offloads()

    def kv_cache_value_bytes(self) -> "Optional[tuple[float, float]]":
        """Bytes per cached key and value element where these settings choose the KV cache's
        type (llama.cpp's engine.kv_cache); None: the engine's default dtype."""
        return None

    def input_embeddings_on_device(self) -> bool:
        """Whether, on a GPU, the token-embedding table is held in device memory (llama.cpp
        keeps it in host memory: its lookup runs on the CPU)."""
        return True

    def gpu_runtime(self) -> Optional[str]:
        """Which library of this environment drives the GPU for these settings ("torch",
        "llama_cpp"), for the plan's check that it can; None: none of this environment's
        (a server of its own environment, or one bench attaches to)."""
        return None

    def secrets(self) -> list[str]:
        """Values these settings hold or point to that must never reach a file (a password,
        a key read from the environment); bench.core.secrets scrubs them."""
        return []

    def redacted(self) -> "EngineSettings":
        """These settings as a row may store them (secrets replaced)."""
        return self


# what every cell of a torch engine imports first (bench.sweep.children forks it ready):
# transformers is lazy, and its modeling_utils (type validators, activations) take ~4 s
TORCH_PRELOAD = ("torch", "transformers", "transformers.modeling_utils")


@dataclass(frozen=True)
class Capabilities:
    """What an engine can run and measure, declared up front (checked at plan time)."""

    name: str
    quant_methods: tuple[str, ...]  # QuantConfig.method values it runs
    default_for: tuple[str, ...]  # the methods engine=auto runs on this engine
    devices: tuple[str, ...]  # "cpu", "cuda"
    weights: tuple[str, ...]  # model sources: real, synthetic, tiny
    token_clock: bool  # per-token timestamps from inside generation
    allocator_peaks: bool  # a CUDA allocator whose peak counters it can read and reset
    offload: bool  # offload=true (a GPU budget, the rest in host RAM)
    compile: bool  # cell.compile=true
    max_batch_size: Optional[int]  # largest workload.batch_size; None: any
    # architectures it can build from facts alone with weights=synthetic (None: any)
    synthetic_model_types: Optional[tuple[str, ...]]
    # dtype of the KV cache; None: the scheme's activation dtype (QuantConfig.dtype)
    kv_cache_dtype: Optional[str]
    distribution: str  # the Python distribution whose version is `engine_version`
    # clients at once (workload.concurrency); in-process engines run one sequence at a time
    max_concurrency: Optional[int] = 1
    # every position's whole next-token distribution (quality: KL divergence); a server's
    # API returns its top few log-probabilities only
    full_logprobs: bool = True
    # the model tasks it runs (bench.tasks: a task runs on engines declaring its engine task)
    tasks: tuple[str, ...] = ("text-generation",)
    # generate_at_depth: the prompt timed after tokens already in the cache (workload.depths)
    speed_at_depth: bool = False
    # start_device creates this process's CUDA context (so it can be measured before any
    # tensor); others create theirs while loading (llama.cpp, a server's own process)
    context_at_start: bool = False
    # why the model tasks it does not run are not run yet (the plan's refusal says it)
    other_tasks_note: str = ""
    # the libraries every cell of this engine imports before its work: its process forks
    # from a server that imported them once (bench.sweep.children), instead of importing
    # them for seconds in a fresh interpreter; () for an engine that must not have them
    # (llama.cpp's host memory would count torch's)
    preload: tuple[str, ...] = ()


@dataclass(frozen=True)
class Device:
    """Where a cell runs: the CPU, or one CUDA device by index."""

    type: str  # "cpu" | "cuda"
    index: int = 0


@dataclass(frozen=True)
class DeviceInfo:
    """The device a cell runs on, and the capacity it runs under (the class cap or the card)."""

    name: str
    total_bytes: int
    capacity_bytes: int
    capacity_basis: str  # for skip reasons: "total of NVIDIA H100 (gpu=local)", ...
    emulated: bool


@dataclass(frozen=True)
class GenerationTiming:
    """One generate call of exactly N new tokens: bench's clock, and the engine's own counters
    for the same call where the engine keeps them (llama.cpp's perf context)."""

    ttft_s: float
    decode_s: float
    token_intervals_s: tuple[float, ...]
    engine_prefill_s: Optional[float] = None
    engine_prefill_tokens: Optional[int] = None
    engine_decode_s: Optional[float] = None
    engine_decode_tokens: Optional[int] = None
    tokens: Optional[int] = None  # tokens really generated (servers may stop short); None: N
    e2e_s: Optional[float] = None  # request sent -> last byte (servers); None: ttft + decode


@dataclass(frozen=True)
class ImageRequest:
    """One text-to-image or image-to-video call: the same inputs for every engine and scheme
    (the initial latents come from `seed`, drawn in float32 on the CPU whatever the dtype)."""

    prompt: Optional[str]
    image: Any  # a PIL image (image-to-video), else None
    height: Optional[int]  # None: the pipeline's native resolution
    width: Optional[int]
    steps: Optional[int]  # None: the pipeline's default
    guidance: Optional[float]
    frames: Optional[int]
    batch_size: int
    seed: int


@dataclass(frozen=True)
class ImageRun:
    """What one call did, phase by phase, and what it made (for quality)."""

    total_s: float
    encoder_s: float  # text encoder(s), or the image encoder of image-to-video
    step_s: tuple[float, ...]  # each denoising step: the denoiser's calls and the scheduler
    decode_s: Optional[float]  # the VAE's decode of the final latents (None: no VAE)
    images: "np.ndarray"  # images (or frames) x height x width x 3, float32 in [0, 1]
    latents: "np.ndarray"  # the final latents the VAE decoded, float32
    height: int
    width: int
    steps: int
    guidance: Optional[float]
    frames: Optional[int]


@dataclass(frozen=True)
class ClientRun:
    """Requests of several clients at once: every finished one, the wall time from the first
    sent to the last done, and the failed ones' messages."""

    timings: tuple[GenerationTiming, ...]
    wall_s: float
    errors: tuple[str, ...] = ()


def cpu_threads(cfg: "BenchConfig") -> int:
    """cell.threads, else every CPU this process may run on (torch's choice too)."""
    return cfg.cell.threads or len(os.sched_getaffinity(0))


def nvml_sees_cuda() -> bool:
    """Whether the driver shows this machine a CUDA device (no NVML, no driver: no)."""
    from bench.core.gpu import sees_gpu

    return sees_gpu()


def card_device_info(cfg: "BenchConfig", device: Device) -> DeviceInfo:
    """The card's own capacity, for engines that cannot cap their allocations: what CUDA can
    allocate on it (the CUDA driver's total, as torch's total_memory), not NVML's total,
    which also counts what the driver keeps; the device is NVML's with the CUDA device's
    UUID (a MIG slice's own)."""
    from bench.core.gpu import cuda_ids, nvml_device

    ids = cuda_ids(device.index)
    found = nvml_device(ids)
    name = found.name()
    if ids.total_bytes:
        total, whose = ids.total_bytes, "CUDA's total"
    else:  # a driver that does not say: NVML's, a little above what CUDA can allocate
        total, whose = found.total_bytes(), "NVML's total"
    return DeviceInfo(name, total, total, f"{whose} of {name} (gpu={cfg.gpu.name})",
                      emulated=False)


def allocator_cap(class_bytes: int, context_bytes: Optional[int]) -> int:
    """What a capped allocator may hold so that it and the CUDA context (memory the
    allocator never sees) stay within a GPU class: the class minus the measured context.
    Without a measured context, the whole class (the context then comes on top)."""
    if context_bytes is None:
        return class_bytes
    cap = class_bytes - context_bytes
    if cap <= 0:
        from bench.core.errors import SkipCell

        raise SkipCell(f"the CUDA context alone ({context_bytes / 2**20:.0f} MiB) fills the "
                       f"class's {class_bytes / 2**20:.0f} MiB")
    return cap


# lm-eval's own default for generate_until without max_gen_toks
DEFAULT_MAX_GEN_TOKS = 256


@dataclass(frozen=True)
class GreedyRequest:
    """An lm-eval generate_until request's settings, as every engine's LM reads them."""

    until: tuple[str, ...]
    max_gen: int

    @classmethod
    def of(cls, gen_kwargs: Optional[dict[str, Any]], engine: str) -> "GreedyRequest":
        kwargs = dict(gen_kwargs or {})
        if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
            raise ValueError(f"bench's {engine} LM generates greedily (do_sample=false)")
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        return cls(tuple(until), int(kwargs.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS))

    def cut(self, text: str) -> str:
        """`text` up to the first stop string."""
        hits = [text.index(stop) for stop in self.until if stop and stop in text]
        return text[:min(hits)] if hits else text


# Of the GPU capacity, the share left to weights when offloading; the rest is for the KV
# cache (subtracted separately), activations, the CUDA context and allocator slack.
WEIGHTS_SHARE = 0.9


@dataclass(frozen=True)
class OffloadBudget:
    """Bytes of weights an offloading engine may place on the GPU, and in host RAM beyond."""

    gpu_bytes: int
    host_bytes: int

    @classmethod
    def for_capacity(cls, gpu_capacity: int, kv_cache_bytes: int,
                     host_total: int) -> "OffloadBudget":
        return cls(gpu_bytes=max(0, int(WEIGHTS_SHARE * gpu_capacity) - kv_cache_bytes),
                   host_bytes=int(WEIGHTS_SHARE * host_total))

    def max_memory(self, device_index: int) -> dict[Union[int, str], int]:
        """accelerate's max_memory: the GPU's budget and host RAM's."""
        return {device_index: self.gpu_bytes, "cpu": self.host_bytes}


class LoadedModel(ABC):
    """A model an engine loaded: everything the cell measures and evaluates goes through it."""

    hf_id: Optional[str] = None  # hub id or directory the weights came from
    revision: Optional[str] = None  # the commit (or cache entry) actually loaded
    quantize_s: Optional[float] = None  # quantization separate from loading, when timed
    note: Optional[str] = None  # how the quantized weights came to be (cache hit, kernel, ...)
    weights_origin: Optional[str] = None  # the file and its type the engine really runs
    offloaded: bool = False  # part of the model placed in host RAM (a partial offload)
    # bench started the processes pids() names (it may reset their peak counters); an
    # attached server's are someone else's, only read
    owns_processes: bool = True

    def facts(self) -> dict[str, Any]:
        """Row fields the engine learned by loading (what a server says it is and holds)."""
        return {}

    def cannot_score(self) -> Optional[str]:
        """Why log-likelihoods (MMLU) through this model cannot be trusted; None when they can."""
        return None

    def score_check(self) -> Optional[str]:
        """What a check of the log-likelihoods found (a server's self-test); None: none ran."""
        return None

    @abstractmethod
    def weights_bytes(self) -> Optional[int]:
        """Bytes of weight storage the engine holds (quantized layouts as stored); None
        where the engine cannot know (a server bench attached to)."""

    def quantized_share(self) -> Optional[float]:
        """Share of the parameters the scheme really holds quantized, where the engine can
        tell (a library may leave layers alone); None where every weight is by construction."""
        return None

    @abstractmethod
    def generate(self, prompt: "np.ndarray", new_tokens: int) -> GenerationTiming:
        """Greedy generation of exactly `new_tokens` tokens after `prompt` (batch x tokens
        ids, the same ids for every engine), each token timestamped."""

    def generate_at_depth(self, prefix: "np.ndarray", prompt: "np.ndarray",
                          new_tokens: int) -> GenerationTiming:
        """As `generate`, with the `prefix` ids (batch x depth) in the KV cache first,
        untimed: the prompt's prefill and the decode then attend to depth + their tokens
        (Capabilities.speed_at_depth engines)."""
        raise NotImplementedError(f"{type(self).__name__} has no speed at depth")

    def caption(self, new_tokens: int) -> "np.ndarray":
        """A vision-language model's request's token ids followed by its greedy answer of
        `new_tokens` tokens (the quality reference's caption)."""
        raise NotImplementedError(f"{type(self).__name__} has no image to caption")

    def speed_facts(self) -> dict[str, Any]:
        """Row fields the engine measured during the timed calls beyond the token clock (a
        vision-language model's image preprocessing and vision-encoder times)."""
        return {}

    def render(self, request: ImageRequest) -> ImageRun:
        """One image-generation call (engines of the image tasks), each phase timed."""
        raise NotImplementedError(f"{type(self).__name__} does not generate images")

    def generate_concurrently(self, new_tokens: int, clients: int, per_client: int,
                              min_duration_s: float, max_per_client: int) -> ClientRun:
        """`clients` clients each sending the workload's request back-to-back: at least
        `per_client` requests each, more until `min_duration_s` passed (at most
        `max_per_client`). Engines with max_concurrency > 1 only."""
        raise NotImplementedError(f"{type(self).__name__} runs one sequence at a time")

    @abstractmethod
    def lm(self, batch_size: int) -> Any:
        """An lm-eval `LM` over this same loaded model (no reload, no second quantization)."""

    @abstractmethod
    def logprobs(self, token_ids: Sequence[int], last: Optional[int] = None) -> "np.ndarray":
        """Log-probabilities of the next token at every position of `token_ids` (positions x
        vocabulary, float32), or at the `last` positions only: the hook quality measures (KL
        divergence) are built on."""

    def pids(self) -> list[int]:
        """Processes whose memory is the model's (in-process engines: this one)."""
        return [os.getpid()]

    def device_buffers_bytes(self) -> Optional[int]:
        """Device memory the engine says it allocated itself (weights, KV cache, compute
        buffers), for engines that create their CUDA context while loading: the process's
        device memory minus this is the context. None where the engine does not say."""
        return None

    def device_need(self, peak_bytes: int) -> dict[str, Any]:
        """Row fields of what the model needs on the device when the engine reserves more
        than that (vLLM's KV-cache reservation); empty where the peak is the need."""
        return {}

    def close(self) -> None:
        """Release the model (and stop anything the engine started)."""
        return None


class Engine(ABC):
    """One inference library behind the interface. Heavy imports live in the methods."""

    capabilities: Capabilities

    def setup(self, cfg: "BenchConfig") -> None:
        """Process settings before anything is measured (threads, library log levels)."""
        return None

    @abstractmethod
    def resolve_device(self, requested: str) -> Device:
        """The device a cell with `cell.device=requested` runs on; SkipCell when absent."""

    @abstractmethod
    def start_device(self, cfg: "BenchConfig", device: Device) -> DeviceInfo:
        """Prepare a CUDA device for measuring (this process's context where the engine
        makes one: capabilities.context_at_start); only called for cuda."""

    def emulate_class(self, cfg: "BenchConfig", device: Device, class_bytes: int,
                      context_bytes: Optional[int]) -> Optional[dict[str, Any]]:
        """Make the device behave as a GPU class of `class_bytes` (smaller than the card):
        the row fields saying how, or None where this engine cannot (a skip)."""
        return None

    def prepare(self, cfg: "BenchConfig") -> dict[str, Any]:
        """Build what the cell loads but must not time (in its own process); returns figures
        for the row (e.g. quantize_s of a conversion made now)."""
        return {}

    @abstractmethod
    def load(self, cfg: "BenchConfig", device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        """The cell's model on `device`, quantized by its scheme (SkipCell where it cannot
        run here). `budget`: an offload budget (engines with the offload capability)."""

    def synchronize(self, device: Device) -> None:
        """Wait for queued device work (timing and memory boundaries)."""
        return None

    def reset_allocator_peaks(self, device: Device) -> None:
        """Start the allocator's peak counters afresh (allocator_peaks engines)."""
        return None

    def allocator_reserved_bytes(self, device: Device) -> Optional[int]:
        """What the engine's allocator holds on the device now (allocator_peaks engines): of
        the process's device memory, the part that is not the CUDA context."""
        return None

    def allocator_peaks(self, device: Device) -> dict[str, Optional[int]]:
        """peak_alloc_bytes / peak_reserved_bytes since the last reset (allocator_peaks)."""
        return {}

    def is_oom(self, exc: BaseException) -> bool:
        """Whether `exc` means the device or host ran out of memory."""
        from bench.core.errors import is_oom

        return is_oom(exc)

    def versions(self) -> dict[str, Optional[str]]:
        """Provenance columns this engine fills in the child (torch, cuda, engine_version)."""
        from bench.core.provenance import package_version

        return {"engine_version": package_version(self.capabilities.distribution)}
