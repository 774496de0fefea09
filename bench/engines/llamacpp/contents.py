"""What a GGUF file really holds, as llama.cpp reports it on load: its file type, bits per
weight, and the tensor types by share of the weights.

A file type names a mix, not every tensor's type: llama.cpp's quantizer gives some tensors
more bits by design (Q4_K_M keeps half of ffn_down and attn_v at Q6_K), and a tensor whose
rows are not a multiple of the 256-wide K-quant super-block cannot hold Q2_K…Q6_K at all, so
the quantizer silently picks another type for it (SmolLM2-135M's 576-wide rows: its "Q4_K_M"
is 58 % Q5_0 and 10.5 % Q4_K). When the type the scheme asks for holds less than half of the
quantized weights, the row says so (`quant_fallback`) and names the row widths that fell back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.core.errors import BenchInputError

K_BLOCK = 256  # the K-quants' super-block: a row must be a multiple of it
FULL_PRECISION = frozenset({"F32", "F16", "BF16", "F64"})
_MIX_SUFFIXES = ("_XS", "_XXS", "_S", "_M", "_L")  # Q4_K_M → Q4_K; IQ4_XS stays (a type)


def requested_type(file_type: str) -> str:
    """The tensor type a file type is named after: Q4_K_M → Q4_K, Q3_K_L → Q3_K, Q8_0 → Q8_0."""
    if "_K_" in file_type:
        for suffix in _MIX_SUFFIXES:
            if file_type.endswith(suffix):
                return file_type[: -len(suffix)]
    return file_type


@dataclass(frozen=True)
class GgufContents:
    """One file's types, read from its tensor table (the gguf package: no model is loaded)."""

    file_type: str
    parameters: int
    file_bytes: int
    weights: dict[str, int]  # elements by tensor type
    widths: dict[str, set[int]]  # row widths of the quantized tensors, by tensor type

    @property
    def bits_per_weight(self) -> float:
        """File size × 8 / parameters, as llama.cpp's load line prints it."""
        return 8 * self.file_bytes / self.parameters

    @property
    def shares(self) -> dict[str, float]:
        """Share of all weights by tensor type, largest first."""
        return {name: round(count / self.parameters, 4)
                for name, count in sorted(self.weights.items(), key=lambda kv: -kv[1])}

    def requested_share(self) -> Optional[float]:
        """Share of the quantized weights held in the requested type; None for a
        full-precision file (nothing was quantized)."""
        quantized = sum(n for name, n in self.weights.items() if name not in FULL_PRECISION)
        if quantized == 0 or self.file_type in FULL_PRECISION:
            return None
        return self.weights.get(requested_type(self.file_type), 0) / quantized

    def fallback(self) -> Optional[str]:
        """Why the file is not what its name says, in the words the report shows beside
        the scheme (e.g. "10 % Q4_K, falls back for 576-wide rows"); None when the
        requested type holds at least half of the quantized weights."""
        share = self.requested_share()
        if share is None or share >= 0.5:
            return None
        wanted = requested_type(self.file_type)
        text = f"{100 * share:.0f} % {wanted}"
        if "_K" in wanted:
            narrow = sorted({w for name, ws in self.widths.items() if name != wanted
                             for w in ws if w % K_BLOCK})
            if narrow:
                rows = ", ".join(str(w) for w in narrow)
                return f"{text}, falls back for {rows}-wide rows"
        return f"{text}, the rest in other types"

    def dominant(self, count: int = 2) -> str:
        """The largest types with their shares, for a plot label: "Q5_0 58 %, Q8_0 22 %"."""
        return ", ".join(f"{name} {100 * share:.0f} %"
                         for name, share in list(self.shares.items())[:count])

    def facts(self) -> dict[str, Any]:
        """The row's columns."""
        return {"gguf_file_type": self.file_type,
                "bits_per_weight": round(self.bits_per_weight, 3),
                "tensor_types": self.shares, "quant_fallback": self.fallback()}


def read_contents(path: Path) -> GgufContents:
    """The file's type, size and tensor table."""
    import gguf

    from bench.engines.llamacpp.files import file_type_of

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise BenchInputError(f"{path} is not a GGUF file llama.cpp can read: {exc}") from exc
    weights: Counter[str] = Counter()
    widths: dict[str, set[int]] = {}
    for tensor in reader.tensors:
        name = tensor.tensor_type.name
        weights[name] += int(tensor.n_elements)
        if name not in FULL_PRECISION and len(tensor.shape) > 1:
            widths.setdefault(name, set()).add(int(tensor.shape[0]))
    return GgufContents(file_type=file_type_of(path), parameters=sum(weights.values()),
                        file_bytes=path.stat().st_size, weights=dict(weights), widths=widths)
