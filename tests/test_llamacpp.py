"""The llama.cpp engine for real, on the tiny model (CPU): bench's GGUF writer against
transformers on the same weights, llama.cpp's quantizer and the cache, the token loop and its
counters, accuracy through the same lm-eval tasks, and both engines behind one seam."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data import invented_mmlu
from bench.data.prompts import random_prompt
from bench.engines import load_engine
from bench.engines.base import Device
from bench.engines.llamacpp import files
from bench.engines.llamacpp.engine import repack
from bench.sweep.plan import make_plan
from tests.conftest import FAST, run_bench

CPU = Device("cpu")
TYPES = ("gguf-f16", "gguf-q8_0", "gguf-q6_k", "gguf-q4_k_m", "gguf-q4_0", "gguf-q2_k")


def cfg(*args: str):
    return make_plan(["model=tiny-llama", "eval=none", *args])[0].config


def prepared(*args: str) -> files.GgufFile:
    """The cell's GGUF file, made by its prepare step as the runner would."""
    c = cfg(*args)
    load_engine("llamacpp").prepare(c)
    return files.prepared_file(c)


def loaded(*args: str, for_eval: bool = False):
    """A model through the engine the cell would use (prepared first, as the runner does)."""
    c = cfg(*args)
    engine = load_engine(c.resolved_engine)
    engine.setup(c)
    engine.prepare(c)
    return c, engine.load(c, CPU, None, for_eval=for_eval)


@pytest.fixture(scope="module")
def both(cache_dir: Path):
    """The tiny model's F32 weights through llama.cpp and transformers."""
    _, llama = loaded("engine=llamacpp", "quant=fp32", for_eval=True)
    _, hf = loaded("quant=fp32", for_eval=True)
    yield llama, hf
    llama.close()


TEXTS = ["The river measures the results.\nQuestion: what is 12 plus 30? Answer: 42",
         "def f_3(total):\n    return [x * 4 for x in total if x > 2]\n",
         invented_mmlu.fewshot_prompt(invented_mmlu.items("imaginary zoology", "test")[0], 2)]


def test_gguf_writer_tokenizes_and_scores_like_transformers(both) -> None:
    llama, hf = both
    for text in TEXTS:
        ids = hf.tokenizer(text)["input_ids"]
        assert llama.lm(1).tok_encode(text) == ids
        ours, theirs = llama.logprobs(ids), hf.logprobs(ids)
        assert ours.shape == theirs.shape == (len(ids), 2048)
        assert np.abs(ours - theirs).max() < 0.02
        assert (ours.argmax(-1) == theirs.argmax(-1)).all()
        assert np.allclose(np.exp(ours).sum(-1), 1.0, atol=1e-4)


def test_mmlu_loglikelihood_through_llamacpp_matches_transformers(both) -> None:
    """The same MMLU-format prompt, 5-shot, scored by each engine's lm-eval LM."""
    from lm_eval.api.instance import Instance

    llama, hf = both
    item = invented_mmlu.items("imaginary history", "test")[3]
    context = invented_mmlu.fewshot_prompt(item, 5)
    requests = [Instance("loglikelihood", {}, (context, " " + letter), i)
                for i, letter in enumerate(invented_mmlu.LETTERS)]
    ours = llama.lm(8).loglikelihood(requests)
    theirs = hf.lm(8).loglikelihood(requests)
    for (a, greedy_a), (b, greedy_b) in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=5e-3)
        assert greedy_a == greedy_b
    assert max(range(4), key=lambda i: ours[i][0]) == max(range(4), key=lambda i: theirs[i][0])


def test_greedy_generation_is_the_same_text(both) -> None:
    from lm_eval.api.instance import Instance

    llama, hf = both
    request = [Instance("generate_until", {}, ("def add(a, b):\n", {
        "until": ["\ndef"], "max_gen_toks": 24, "do_sample": False}), 0)]
    assert llama.lm(1).generate_until(request) == hf.lm(1).generate_until(request)


def test_gguf_types_are_quantized_by_llamacpp_and_ordered_by_bits(cache_dir: Path) -> None:
    sizes = {}
    for quant in TYPES:
        c, model = loaded(f"quant={quant}")
        sizes[quant] = model.weights_bytes()
        assert files.file_type_of(files.prepared_file(c).path) == c.quant.gguf_type
        assert "quantized to" in model.weights_origin or quant == "gguf-f16"
        model.close()
    ordered = [sizes[q] for q in TYPES]
    assert ordered == sorted(ordered, reverse=True), sizes
    assert sizes["gguf-f16"] > 3 * sizes["gguf-q4_k_m"]


def test_exactly_new_tokens_with_llamacpps_own_counters(cache_dir: Path) -> None:
    c, model = loaded("quant=gguf-q8_0")
    prompt = random_prompt(1, 20, c.model.arch.vocab_size, 0)
    for _ in range(2):  # the second call starts from an empty KV cache again
        t = model.generate(prompt, 9)
        assert len(t.token_intervals_s) == 8 and t.ttft_s > 0 and t.decode_s > 0
        assert t.engine_prefill_tokens == 20 and t.engine_decode_tokens == 8
        assert 0 < t.engine_decode_s <= t.decode_s * 1.01
    model.close()


def test_cache_is_reused_and_keyed_by_the_llamacpp_version(cache_dir: Path, monkeypatch) -> None:
    c = cfg("quant=gguf-q4_0")
    engine = load_engine("llamacpp")
    engine.prepare(c)
    first = files.prepared_file(c)
    assert engine.prepare(c) == {}  # a cache hit quantizes nothing: no quantize_s
    assert files.prepared_file(c).path == first.path
    sidecar = json.loads(first.path.with_name(first.path.name + ".json").read_text())
    assert sidecar["llama_cpp_python"] == files.llama_cpp_version()
    monkeypatch.setattr(files, "llama_cpp_version", lambda: "9.9.9")
    assert files.ready_file(c) is None  # another llama.cpp: another cache entry


def test_a_published_gguf_is_measured_as_it_is_and_its_type_checked(cache_dir: Path) -> None:
    made = prepared("quant=gguf-q8_0")
    c = cfg("quant=gguf-q8_0", f"+quant.prequantized.tiny-llama={made.path}")
    assert files.ready_file(c) is None  # its type is checked in the cell's prepare step
    load_engine("llamacpp").prepare(c)
    model = load_engine("llamacpp").load(c, CPU, None, for_eval=False)
    assert model.weights_origin.startswith("published ") and "Q8_0" in model.weights_origin
    model.close()
    wrong = cfg("quant=gguf-q4_0", f"+quant.prequantized.tiny-llama={made.path}")
    with pytest.raises(ValueError, match="is a Q8_0 file, not Q4_0"):
        files.ensure_file(wrong, threads=1)


def test_repack_follows_the_setting_and_defaults_on_without_amx() -> None:
    from bench.engines.llamacpp import engine

    assert repack(cfg("engine=llamacpp", "quant=gguf-q4_0", "engine.repack=false")) is False
    assert repack(cfg("engine=llamacpp", "quant=gguf-q4_0", "engine.repack=true")) is True
    assert repack(cfg("quant=gguf-q4_0")) is (not engine.amx_in_use())


@pytest.mark.slow
def test_an_impossible_allocation_is_an_oom(cache_dir: Path) -> None:
    from bench.core.errors import OutOfMemory
    from bench.engines.llamacpp.engine import _open

    c = cfg("quant=gguf-q2_k")
    with pytest.raises(OutOfMemory, match="llama.cpp"):
        _open(str(prepared("quant=gguf-q2_k").path), c, 2**31, False, 0)  # a 4 TiB KV cache


@pytest.mark.slow
def test_both_engines_in_one_sweep_and_one_report(tmp_path: Path, cache_dir: Path) -> None:
    """The done-when of the engine axis, shortened: GGUF and transformers rows of one model
    with accuracy through the same lm-eval tasks, in one report."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    common = [*FAST, f"results_dir={results}", f"reports_dir={reports}", "run_id=engines",
              "eval=offline", "eval.mmlu=invented", "eval.mmlu_limit=null",
              "eval.mmlu_cloze=false", "eval.humaneval_limit=2",
              "eval.humaneval_max_new_tokens=16", "eval.quality_chunks=2",
              "eval.quality_chunk_tokens=128"]
    proc = run_bench("-m", "engine=llamacpp", "model=tiny-llama",
                     "quant=gguf-f16,gguf-q4_k_m,gguf-q2_k", *common, cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_bench("-m", "model=tiny-llama", "quant=fp32", *common, cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(results).set_index("quant")
    assert (df.status == "ok").all(), df[["status", "error"]]
    assert df.loc["fp32", "engine"] == "hf" and df.loc["gguf-f16", "engine"] == "llamacpp"
    gguf = df[df.engine == "llamacpp"]
    assert gguf.engine_version.eq(files.llama_cpp_version()).all()
    assert (gguf.engine_decode_tok_s > 0).all() and (gguf.engine_prefill_tok_s > 0).all()
    assert df.loc["fp32", "engine_decode_tok_s"] is None or pd.isna(
        df.loc["fp32", "engine_decode_tok_s"])
    assert df.loc["gguf-f16", "weights_bytes"] > df.loc["gguf-q4_k_m", "weights_bytes"] > (
        df.loc["gguf-q2_k", "weights_bytes"])
    assert (df.mmlu_n == 96).all() and (df.humaneval_n == 2).all()
    # the same weights, the same questions: F16 llama.cpp scores what fp32 transformers does
    assert abs(df.loc["gguf-f16", "mmlu_acc"] - df.loc["fp32", "mmlu_acc"]) <= 0.03
    assert gguf.weights_origin.str.contains("tiny checkpoint").all()
    assert not df.offload.any()  # all layers on the CPU of a CPU cell is not an offload
    assert df.loc["fp32", "kld_mean"] == 0.0
    assert (gguf.kld_mean > 0).all(), gguf[["kld_mean", "quality_tokens", "quality_reference"]]
    compat = (reports / "compatibility.md").read_text()
    assert "| llamacpp " in compat and "| hf " in compat and "gguf-q4_k_m" in compat
