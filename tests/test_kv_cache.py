"""The KV cache's type as an engine setting (llama.cpp's -ctk / -ctv): its checks, the
identity it keeps, the bound and formula at its bytes per element, llama.cpp's own account
read from its log, and a real cache of each type on SmolLM2 (in process, on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from bench.core.errors import BenchInputError
from bench.engines.base import Device
from bench.engines.llamacpp import KV_CACHE_TYPES, LlamaCppSettings
from bench.engines.llamacpp.buffers import (
    LOG_RESOLUTION_BYTES,
    compute_buffers,
    kv_cache_lines,
)
from bench.engines.llamacpp.kv_cache import formula_bytes_per_token
from bench.engines.openai.kinds import kinds
from bench.sweep.plan import make_plan
from bench.tasks.bounds import predict_peak
from tests.conftest import load_on_cpu

SMOLLM2 = ["model=smollm2-135m", "weights=packaged", "quant=gguf-q8_0", "eval=none"]
# SmolLM2-135M: 30 layers x 3 KV heads x head dim 64 = 5,760 elements each of K and V
ELEMENTS = 30 * 3 * 64
# llama.cpp's log of a context made with -ctk q8_0 -ctv q4_0 (0.3.36, SmolLM2, n_ctx 200)
LOG = ("llama_context:        CPU  output buffer size =     0.19 MiB\n"
       "llama_kv_cache:        CPU KV buffer size =     2.29 MiB\n"
       "llama_kv_cache: size =    2.29 MiB (   256 cells,  30 layers,  1/1 seqs), "
       "K (q8_0):    1.49 MiB, V (q4_0):    0.79 MiB\n"
       "llama_context:        CPU compute buffer size =    98.51 MiB\n")


def cell(*args: str, engine: str = "llamacpp"):
    return make_plan([*SMOLLM2, f"engine={engine}", *args])[0].config


def test_kv_types_are_checked_in_one_line_before_anything_loads() -> None:
    with pytest.raises(BenchInputError, match="engine.kv_cache='q9' is not valid; valid "
                                              "choices: f32, f16, bf16, q8_0, q4_0"):
        cell("engine.kv_cache=q9")
    with pytest.raises(BenchInputError, match="one type, or K/V"):
        cell("engine.kv_cache=q8_0/q4_0/f16")
    with pytest.raises(BenchInputError, match="quantizes the V cache only with flash"):
        cell("engine.kv_cache=q8_0/q4_0", "engine.flash_attn=false")
    cell("engine.kv_cache=q4_0/f16", "engine.flash_attn=false")  # a quantized K alone is fine
    with pytest.raises(BenchInputError, match="engine.kv_cache is a llama.cpp setting"):
        make_plan(["model=tiny-llama", "engine=vllm", "quant=fp32", "eval=none",
                   "engine.kv_cache=q8_0"])  # vLLM's kv_cache_dtype is its own flag


def test_the_default_type_keeps_every_id_and_another_is_a_cell_of_its_own() -> None:
    ids = {kv: make_plan([*SMOLLM2, "engine=llamacpp",
                          *([f"engine.kv_cache={kv}"] if kv else [])])[0].cell_id
           for kv in (None, "f16", "f16/f16", "q8_0", "q8_0/q8_0", "q8_0/q4_0")}
    assert ids[None] == ids["f16"] == ids["f16/f16"]
    assert ids["q8_0"] == ids["q8_0/q8_0"]
    assert len({ids[None], ids["q8_0"], ids["q8_0/q4_0"]}) == 3


def test_a_quantized_v_turns_flash_attention_on_and_says_so() -> None:
    assert LlamaCppSettings().flash_attention() is None
    assert LlamaCppSettings(kv_cache="q4_0/f16").flash_attention() is None
    assert LlamaCppSettings(kv_cache="q8_0").flash_attention() is True
    assert LlamaCppSettings(kv_cache="q8_0", flash_attn=True).flash_attention() is True
    c = cell("engine.kv_cache=q8_0/q4_0")
    assert c.engine.kv_cache_name() == "q8_0/q4_0"
    assert c.engine.kv_cache_pair() == ("q8_0", "q4_0")


def test_the_servers_get_the_same_types(monkeypatch) -> None:
    """llama-server's -ctk / -ctv and flash attention; llama-cpp-python's server's type ids."""
    from bench.engines.openai.kinds import llama_server

    served = cell("engine.kv_cache=q8_0/q4_0", engine="llama-server")
    args = llama_server.command(served, Device("cpu"), Path("llama-server"), Path("m.gguf"),
                                "127.0.0.1", 8080, 256, 1)
    assert args[args.index("--cache-type-k") + 1] == "q8_0"
    assert args[args.index("--cache-type-v") + 1] == "q4_0"
    assert args[args.index("--flash-attn") + 1] == "on"
    assert "--cache-type-k" not in llama_server.command(
        cell(engine="llama-server"), Device("cpu"), Path("llama-server"), Path("m.gguf"),
        "127.0.0.1", 8080, 256, 1)
    python_server = cell("engine.kv_cache=q8_0/q4_0", engine="llamacpp-server")
    from bench.engines.openai.kinds import gguf, llama_cpp

    gguf_file = type("File", (), {"path": Path("m.gguf"), "origin": "m.gguf"})()
    monkeypatch.setattr(gguf.GgufServer, "file", lambda self, cfg: gguf_file)
    monkeypatch.setattr(llama_cpp, "gguf_bytes", lambda path: 0)
    command = kinds()["llama_cpp"].command(python_server, Device("cpu"), "python", 8080,
                                           None)[0]
    assert command[command.index("--type_k") + 1] == str(GGMLQuantizationType.Q8_0.value)
    assert command[command.index("--type_v") + 1] == str(GGMLQuantizationType.Q4_0.value)
    assert command[command.index("--flash_attn") + 1] == "True"


def test_bytes_per_element_are_ggmls_and_the_formula_is_llamacpps_layout() -> None:
    for name in KV_CACHE_TYPES:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]]
        assert LlamaCppSettings(kv_cache=name).kv_cache_value_bytes() in (
            None, (size / block,) * 2)
    expected = {None: 2 * ELEMENTS * 2, "q8_0": 2 * ELEMENTS * 34 // 32,
                "q4_0": 2 * ELEMENTS * 18 // 32,
                "q8_0/q4_0": ELEMENTS * 34 // 32 + ELEMENTS * 18 // 32}
    assert expected == {None: 23040, "q8_0": 12240, "q4_0": 6480, "q8_0/q4_0": 9360}
    for kv, per_token in expected.items():
        c = cell(*([f"engine.kv_cache={kv}"] if kv else []))
        assert formula_bytes_per_token(c) == per_token
        # the lower bound counts the cache at the same type (prompt + new - 1 tokens)
        prediction = predict_peak(c)
        assert prediction.kv_cache_bytes == per_token * (128 + 64 - 1)


def test_llamacpps_account_is_read_from_its_log() -> None:
    (line,) = kv_cache_lines(LOG)
    assert (line.cells, line.layers, line.type_name) == (256, 30, "q8_0/q4_0")
    assert line.bytes == round(2.29 * 2**20)
    assert abs(line.bytes_per_token - 9360) <= LOG_RESOLUTION_BYTES / 256  # the log's rounding
    assert compute_buffers(LOG) == int(98.51 * 2**20)
    assert kv_cache_lines("no cache here") == [] and compute_buffers("") is None


@pytest.mark.slow
@pytest.mark.parametrize("kv", [None, "q8_0", "q4_0", "q8_0/q4_0"])
def test_a_real_cache_of_each_type_is_the_formulas_size(kv, cache_dir: Path) -> None:
    """SmolLM2 Q8_0 in process at a 2,048-token prompt: llama.cpp's cache of the type asked
    is the formula's bytes per token to the log's resolution, and it generates."""
    c = cell("workload.prompt_tokens=2048", "workload.new_tokens=8",
             *([f"engine.kv_cache={kv}"] if kv else []))
    loaded = load_on_cpu(c)
    try:
        facts = loaded.facts()
        assert facts["kv_cache_type"] == (kv or "f16")
        assert facts["kv_cache_cells"] >= 2048 + 8
        formula = facts["kv_cache_bytes_per_token_formula"]
        assert formula == {None: 23040, "q8_0": 12240, "q4_0": 6480, "q8_0/q4_0": 9360}[kv]
        # the log's MiB to two decimals (50.625 prints as 50.62), a byte of float on top
        resolution = (LOG_RESOLUTION_BYTES + 1) / facts["kv_cache_cells"]
        assert abs(facts["kv_cache_bytes_per_token"] - formula) <= resolution, facts
        assert facts["compute_buffer_bytes"] > 0
        if kv:
            assert f"KV cache {kv}" in loaded.note
        import numpy as np

        timing = loaded.generate(np.arange(100, 116, dtype=np.int64)[None, :], 4)
        assert timing.tokens in (None, 4) and timing.decode_s > 0
    finally:
        loaded.close()


def test_transformers_cache_is_read_from_its_tensors(cache_dir: Path) -> None:
    """The tiny model in fp32 and bf16: its cache tensors' bytes per token are the formula's
    for the dtype they are held in (2 x layers x KV heads x head dim x bytes)."""
    for quant, dtype, size in (("fp32", "float32", 4), ("bf16", "bfloat16", 2)):
        c = make_plan(["model=tiny-llama", f"quant={quant}", "eval=none"])[0].config
        loaded = load_on_cpu(c)
        arch = c.model.arch
        heads_dim = arch.num_key_value_heads * (arch.hidden_size // arch.num_attention_heads)
        facts = loaded.facts()
        assert facts == {"kv_cache_type": dtype,
                         "kv_cache_bytes_per_token": 2 * arch.num_hidden_layers * heads_dim * size,
                         "kv_cache_bytes_per_token_formula":
                             2 * arch.num_hidden_layers * heads_dim * size}
        loaded.close()
