"""Typed configuration: the dataclasses Hydra composes and validates before any work.

Every config group (model, quant, gpu, eval, workload, cell) is a dataclass registered in
Hydra's ConfigStore, so a typo in a YAML key or an override is rejected at composition, and
each dataclass checks its own values in ``validate()`` before any work (optimum-benchmark's
pattern, without its untyped quantization dicts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from bench.errors import BenchInputError

WEIGHTS = ("real", "synthetic", "tiny")
QUANT_METHODS = ("none", "bnb", "gptq", "awq", "torchao", "hqq")
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


def _choose(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BenchInputError(f"{key}={value!r} is not valid; valid choices: {', '.join(choices)}")


def _positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise BenchInputError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass
class ArchFacts:
    """Architecture facts of a model: enough to build its true shape with random weights."""

    model_type: str = MISSING
    num_hidden_layers: int = MISSING
    hidden_size: int = MISSING
    num_attention_heads: int = MISSING
    num_key_value_heads: int = MISSING
    vocab_size: int = MISSING
    intermediate_size: int = MISSING
    max_position_embeddings: int = MISSING
    params: int = MISSING  # the published parameter count; checked against the built model
    tie_word_embeddings: bool = False
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
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
    steps: int = 0  # 0 = random init only
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3


@dataclass
class ModelConfig:
    name: str = MISSING
    hf_id: Optional[str] = None  # hub id, or a local directory for weights=real
    revision: str = "main"
    default_weights: str = "real"  # what `weights: null` means for this model
    arch: ArchFacts = field(default_factory=ArchFacts)
    tiny: TinyTraining = field(default_factory=TinyTraining)
    trust_remote_code: bool = False

    def validate(self) -> None:
        _choose("model.default_weights", self.default_weights, WEIGHTS)


@dataclass
class QuantConfig:
    """One quantization scheme. Fields a method does not use must stay at their defaults."""

    name: str = MISSING
    method: str = "none"
    bits: int = MISSING  # nominal bits per weight of the quantized linear layers
    dtype: str = "float32"  # dtype of the unquantized parameters and of the activations
    requires_cuda: bool = False
    # bitsandbytes
    bnb_4bit_quant_type: Optional[str] = None  # nf4 | fp4
    bnb_4bit_use_double_quant: bool = False
    llm_int8_threshold: float = 6.0

    def validate(self) -> None:
        _choose("quant.method", self.method, QUANT_METHODS)
        _choose("quant.dtype", self.dtype, DTYPES)
        if self.method == "bnb":
            if self.bits not in (4, 8):
                raise BenchInputError(f"quant.bits={self.bits} is not valid for bnb; valid: 4, 8")
            if self.bits == 4:
                _choose("quant.bnb_4bit_quant_type", self.bnb_4bit_quant_type, ("nf4", "fp4"))
        elif self.bnb_4bit_quant_type is not None or self.bnb_4bit_use_double_quant:
            raise BenchInputError(f"quant.bnb_* keys are only valid with quant.method=bnb "
                                  f"(quant.method={self.method})")
        if self.method == "none":
            expected = {"float32": 32, "float16": 16, "bfloat16": 16}[self.dtype]
            if self.bits != expected:
                raise BenchInputError(f"quant.bits={self.bits} does not match quant.dtype="
                                      f"{self.dtype} (expected {expected})")


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
    """Accuracy settings; `none` measures memory and speed only."""

    name: str = "none"

    def validate(self) -> None:
        _choose("eval.name", self.name, ("none",))


@dataclass
class WorkloadConfig:
    """The generation workload every speed and memory figure is measured at."""

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 64
    warmup_runs: int = 1
    repeats: int = 3  # at least this many timed runs ...
    min_duration_s: float = 0.0  # ... and keep repeating until this much time was timed
    max_repeats: int = 20

    def validate(self) -> None:
        for key in ("batch_size", "prompt_tokens", "new_tokens", "max_repeats"):
            _positive(f"workload.{key}", getattr(self, key))
        _positive("workload.warmup_runs", self.warmup_runs, allow_zero=True)
        _positive("workload.min_duration_s", self.min_duration_s, allow_zero=True)
        if self.new_tokens < 2:
            raise BenchInputError("workload.new_tokens must be >= 2 (decode speed needs a "
                                  "token after the first)")
        if self.repeats < 3:
            raise BenchInputError(f"workload.repeats={self.repeats} must be >= 3")
        if self.max_repeats < self.repeats:
            raise BenchInputError("workload.max_repeats must be >= workload.repeats")


@dataclass
class CellConfig:
    """How one cell is run: isolation, limits and engine settings."""

    timeout_s: float = 1800.0
    device: str = "auto"  # auto = cuda when present, else cpu
    compile: bool = False  # torch.compile the forward pass (its own column)
    threads: Optional[int] = None  # torch CPU threads; null = all cores
    retry_failed: bool = False  # with an existing run_id, measure error/timeout cells again

    def validate(self) -> None:
        _positive("cell.timeout_s", self.timeout_s)
        _choose("cell.device", self.device, DEVICES)
        _positive("cell.threads", self.threads)


@dataclass
class BenchConfig:
    """The whole configuration of one cell (one Hydra job)."""

    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    gpu: GpuConfig = MISSING
    eval: EvalConfig = MISSING
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    cell: CellConfig = field(default_factory=CellConfig)
    weights: Optional[str] = None  # real | synthetic | tiny; null = the model's default
    run_id: Optional[str] = None  # null = a new run id for this invocation
    results_dir: str = "results"
    reports_dir: str = "reports"
    cache_dir: Optional[str] = None  # null = $BENCH_CACHE, else ~/.cache/bench
    dry_run: bool = False
    report: bool = True  # regenerate reports/ after the sweep
    seed: int = 0

    def validate(self) -> None:
        for part in (self.model.arch, self.model, self.quant, self.gpu, self.eval, self.workload,
                     self.cell):
            part.validate()
        if self.weights is not None:
            _choose("weights", self.weights, WEIGHTS)
        if self.resolved_weights == "tiny" and self.model.default_weights != "tiny":
            raise BenchInputError(f"weights=tiny is only valid for tiny models; model="
                                  f"{self.model.name} has default_weights="
                                  f"{self.model.default_weights}")
        if self.resolved_weights == "real" and not self.model.hf_id:
            raise BenchInputError(f"weights=real needs model.hf_id; model={self.model.name} "
                                  f"has none (use weights=synthetic or tiny)")

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
