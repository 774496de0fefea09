"""The schemes transformers runs, as rules on a conf/quant entry: which QuantConfig fields each
method reads and what values they may take. Light (no torch): the plan reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.core.config import QuantRule, choose, one_of, positive
from bench.core.errors import BenchInputError

if TYPE_CHECKING:
    from bench.core.config import QuantConfig

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
_CALIBRATED = frozenset({"kernel", "calibration_dataset", "calibration_samples",
                         "calibration_seq_len", "prequantized"})


def _group_size(quant: "QuantConfig") -> None:
    if quant.group_size is None or quant.group_size <= 0 or quant.group_size % 16:
        raise BenchInputError(f"quant.group_size={quant.group_size!r} must be a positive "
                              f"multiple of 16 for {quant.method}")


def _bnb(quant: "QuantConfig") -> None:
    if quant.bits not in (4, 8):
        raise BenchInputError(f"quant.bits={quant.bits} is not valid for bnb; valid: 4, 8")
    if quant.bits == 4:
        choose("quant.bnb_4bit_quant_type", quant.bnb_4bit_quant_type, ("nf4", "fp4"))
    elif quant.bnb_4bit_quant_type is not None or quant.bnb_4bit_use_double_quant:
        raise BenchInputError("quant.bnb_4bit_* keys are only valid with quant.bits=4")


def _calibrated(quant: "QuantConfig", kernels: tuple[str, ...]) -> None:
    choose("quant.kernel", quant.kernel, kernels)
    choose("quant.calibration_dataset", quant.calibration_dataset, CALIBRATION_DATASETS)
    for key in ("calibration_samples", "calibration_seq_len"):
        if getattr(quant, key) is None:
            raise BenchInputError(f"quant.{key} must be set for {quant.method}")
        positive(f"quant.{key}", getattr(quant, key))


def _gptq(quant: "QuantConfig") -> None:
    one_of("quant.bits", quant.bits, (2, 3, 4, 8))
    if quant.group_size != -1:
        _group_size(quant)
    for key in ("desc_act", "sym"):
        if getattr(quant, key) is None:
            raise BenchInputError(f"quant.{key} must be set (true or false) for gptq")
    _calibrated(quant, GPTQ_KERNELS)


def _awq(quant: "QuantConfig") -> None:
    one_of("quant.bits", quant.bits, (4,))
    _group_size(quant)
    _calibrated(quant, AWQ_KERNELS)


def _torchao(quant: "QuantConfig") -> None:
    choose("quant.torchao_kind", quant.torchao_kind, TORCHAO_KINDS)
    expected = 4 if quant.torchao_kind == "int4wo" else 8
    if quant.bits != expected:
        raise BenchInputError(f"quant.bits={quant.bits} does not match quant.torchao_kind="
                              f"{quant.torchao_kind} (expected {expected})")
    if quant.torchao_kind == "int4wo":
        one_of("quant.group_size", quant.group_size, (32, 64, 128, 256))
        if not quant.requires_cuda:
            raise BenchInputError("quant.torchao_kind=int4wo packs weights for CUDA kernels "
                                  "only: set quant.requires_cuda=true")
    elif quant.group_size is not None:
        raise BenchInputError(f"quant.group_size is not used by torchao_kind="
                              f"{quant.torchao_kind} (per-channel scales); leave it unset")


def _hqq(quant: "QuantConfig") -> None:
    one_of("quant.bits", quant.bits, (1, 2, 3, 4, 8))
    _group_size(quant)
    one_of("quant.hqq_axis", quant.hqq_axis, (0, 1))


QUANT_RULES = {
    "bnb": QuantRule(frozenset({"bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
                                "llm_int8_threshold"}), _bnb),
    "gptq": QuantRule(frozenset({"group_size", "desc_act", "sym", *_CALIBRATED}), _gptq),
    "awq": QuantRule(frozenset({"group_size", *_CALIBRATED}), _awq),
    "torchao": QuantRule(frozenset({"torchao_kind", "group_size"}), _torchao),
    "hqq": QuantRule(frozenset({"group_size", "hqq_axis"}), _hqq),
}
