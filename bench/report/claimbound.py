"""A published claim beside the lower bound of what its model must hold (bench.tasks.bounds):
what the claim implies, checked before anything is measured.

Three rules. A claim is exceeded only beyond half a unit of its last stated digit ("13 GB"
holds up to 13.5 GB: a 13.34 GB bound does not refute it). A weights-footprint claim
(table-d) is compared with the weights alone. A claim names no context, so the KV cache
counted is the least any use holds: one token (named beside). And since a claim rarely says
its precision, the most bits per weight at which it could still hold is given twice: with
the embeddings and output head at the scheme's dtype (as bnb, GPTQ, AWQ keep them), and
quantized too (as GGUF does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from bench.core.config import WorkloadConfig
from bench.core.sizes import DTYPE_BYTES, embedding_params
from bench.report.confdata import ConfData
from bench.report.planned import cell_config
from bench.tasks import task
from bench.tasks.bounds import Prediction

_GB = 1e9


def half_unit_gb(text: str) -> float:
    """Half a unit of the last digit a figure states: "12" -> 0.5, "8.6" -> 0.05."""
    decimals = len(text.strip().partition(".")[2])
    return 0.5 * 10.0 ** -decimals


@dataclass(frozen=True)
class ClaimBound:
    """The bound of a claim's model at the precision the claim implies."""

    quant: str
    bits: int  # the scheme's nominal bits per weight
    bound: Prediction
    weights_only: bool
    params: int
    embedding_params: int  # kept at the dtype by every scheme but GGUF
    dtype_bytes: int
    workload: str  # the KV cache's workload, named

    @property
    def bytes(self) -> int:
        return self.bound.weights_bytes if self.weights_only else self.bound.peak_bytes

    def exceeds(self, claimed_text: str) -> bool:
        """Whether the bound is above the claim beyond half a unit of its last digit."""
        return self.bytes > (float(claimed_text) + half_unit_gb(claimed_text)) * _GB

    def bits_for(self, capacity: float, embeddings_quantized: bool = False) -> float:
        """The most bits per weight at which the model's bound still fits `capacity` bytes
        (negative: not even with no weights at all)."""
        room = capacity - (0 if self.weights_only else self.bound.kv_cache_bytes)
        if embeddings_quantized or not self.embedding_params:
            return 8 * room / self.params
        return 8 * (room - self.embedding_params * self.dtype_bytes) / (
            self.params - self.embedding_params)


def claim_bound(conf: ConfData, model: str, quant: str, weights_only: bool
                ) -> Optional[ClaimBound]:
    """The bound of conf/model `model` under conf/quant `quant`, holding one token (None: no
    conf for them, or no bound for the cell)."""
    workload = WorkloadConfig(prompt_tokens=1, new_tokens=1)
    cfg = cell_config(conf, model, quant, workload, None)
    if cfg is None:
        return None
    kind = task(cfg.model.task)
    bound = kind.lower_bound(cfg)
    if bound is None or cfg.quant.dtype not in DTYPE_BYTES:
        return None
    arch = cfg.model.arch
    embeddings = embedding_params(arch) if arch.has_text_model else 0
    what = "weights only" if weights_only or not bound.kv_tokens else (
        f"weights + KV of b{bound.batch} · {bound.kv_tokens} token")
    return ClaimBound(quant, cfg.quant.bits, bound, weights_only, arch.params, embeddings,
                      DTYPE_BYTES[cfg.quant.dtype], what)


def bits_text(bits: float) -> str:
    return "none fits" if bits <= 0 or not math.isfinite(bits) else f"{bits:.2f}"


def claim_text(cb: ClaimBound, claimed_high: str, precision: str, fewest: int) -> str:
    """The bound's verdict on a claimed figure (its upper end)."""
    limit = float(claimed_high) + half_unit_gb(claimed_high)
    # "at every scheme" only if not even quantized embeddings let the fewest bits fit
    bits = cb.bits_for(float(claimed_high) * _GB, embeddings_quantized=True)
    if not cb.exceeds(claimed_high):
        return f"possible (bound within {limit:g} GB)"
    where = "at every scheme bench has" if bits < fewest else f"at {precision}"
    return f"❌ impossible {where} (bound above {limit:g} GB)"


def class_text(cb: ClaimBound, said: str, capacity: int, fewest: int) -> str:
    """What the bound says of a claimed ✅ (peak within 0.90·C), ⚠️ (within C) or ❌ on a
    card, where the claimed precision cannot fit it: the most bits per weight that could, a
    ✅ or ⚠️ refuted and a ❌ proved when that is below the fewest bench has."""
    if said not in ("yes", "tight", "no"):
        return ""
    room = capacity * (0.9 if said == "yes" else 1.0)
    bits = cb.bits_for(room, embeddings_quantized=True)
    if bits >= cb.bits:
        return ""
    if said == "no":
        return " · ❌ proved at every scheme" if bits < fewest else f" · ≤ {bits_text(bits)} bpw"
    verdict = " ❌ refuted at every scheme" if bits < fewest else ""
    return f" · ≤ {bits_text(bits)} bpw{verdict}"
