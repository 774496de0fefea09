"""llama.cpp's own server (engine=llama-server): its command line from the cell, what its
/metrics and /slots say, Ollama's native answers, the plan's words for each server, and the
real binary end to end (built from the engine's llama.cpp on first use)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bench.core.errors import BenchInputError
from bench.engines.base import Device
from bench.engines.openai import ollama
from bench.engines.openai.kinds.llama_server import command, parse_metrics, slots_use
from bench.sweep.plan import make_plan
from tests.conftest import FAST, run_bench

# /metrics and /slots as llama-server (tools/server, commit 0c1e570) writes them
METRICS = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 41
llamacpp:requests_processing 3
llamacpp:requests_deferred 2
llamacpp:n_busy_slots_per_decode 2.5
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 7
"""
SLOTS = [{"id": 0, "n_ctx": 4096, "is_processing": True, "n_prompt_tokens": 512,
          "next_token": [{"n_decoded": 100}]},
         {"id": 1, "n_ctx": 4096, "is_processing": False, "n_prompt_tokens": 900,
          "next_token": [{"n_decoded": 5}]}]


def _cfg(*args: str):
    return make_plan(["model=smollm2-135m", "engine=llama-server", "quant=gguf-q8_0",
                      "eval=none", *args])[0].config


def test_slots_follow_the_clients_unless_set_and_each_gets_one_sequences_context() -> None:
    line = command(_cfg("workload.concurrency=4"), Device("cpu"), Path("llama-server"),
                   Path("m.gguf"), "127.0.0.1", 8080, 4096, 2)
    assert line[line.index("--parallel") + 1] == "4"
    assert line[line.index("--ctx-size") + 1] == str(4 * 4096)
    assert "--cont-batching" in line and "--metrics" in line and "--slots" in line
    assert line[line.index("--n-gpu-layers") + 1] == "0"
    set_ = command(_cfg("workload.concurrency=4", "engine.slots=2", "engine.flash_attn=true"),
                   Device("cuda", 0), Path("llama-server"), Path("m.gguf"), "127.0.0.1", 1,
                   4096, 2)
    assert set_[set_.index("--parallel") + 1] == "2"
    assert set_[set_.index("--n-gpu-layers") + 1] == "-1"
    assert set_[set_.index("--flash-attn") + 1] == "on"
    assert set_[set_.index("--split-mode") + 1] == "none"


def test_engine_slots_belongs_to_llama_server_only() -> None:
    with pytest.raises(BenchInputError, match="engine.slots"):
        make_plan(["model=smollm2-135m", "engine=llamacpp-server", "quant=gguf-q8_0",
                   "eval=none", "engine.slots=2"])


def test_metrics_and_slots_are_read_as_llama_server_writes_them() -> None:
    metrics = parse_metrics(METRICS)
    assert metrics["requests_deferred"] == 2 and metrics["n_busy_slots_per_decode"] == 2.5
    assert "spec_decode_num_accepted_tokens_per_pos_total" not in metrics  # labelled
    assert slots_use(SLOTS) == (612, 8192, 4096)
    assert slots_use({"error": "slots endpoint disabled"}) == (0, 0, 0)


def test_the_plan_line_says_which_server_each_preset_starts() -> None:
    from bench.sweep.cells import Cell

    native = Cell(_cfg(), ()).describe()
    assert "llama.cpp's own llama-server" in native and "built" in native
    python = Cell(make_plan(["model=smollm2-135m", "engine=llamacpp-server",
                             "quant=gguf-q8_0", "eval=none"])[0].config, ()).describe()
    assert "llama-cpp-python's server: one request at a time" in python


def test_an_engine_alone_runs_the_default_sweeps_schemes_it_can(capsys) -> None:
    cells = make_plan(["+sweep=default", "engine=llama-server"])
    assert {c.config.quant.name for c in cells} == {"fp32", "gguf-q8_0", "gguf-q4_k_m"}
    assert "left out, as it cannot run them: bnb-int8, bnb-nf4" in capsys.readouterr().out
    with pytest.raises(BenchInputError, match="cannot run quant=bnb-int8"):
        make_plan(["+sweep=default", "engine=llama-server", "quant=bnb-int8"])


# Ollama's native API, as its docs/api.md documents the answers
PS = {"models": [{"name": "llama3:latest", "model": "llama3:latest", "size": 5137025024,
                  "size_vram": 3000000000, "digest": "abc", "expires_at": "2024-06-04"}]}
FINAL = {"model": "llama3", "created_at": "2023-08-04T19:22:45.499127Z", "response": "",
         "done": True, "done_reason": "length", "total_duration": 10706818083,
         "load_duration": 6338219291, "prompt_eval_count": 26,
         "prompt_eval_duration": 130079000, "eval_count": 259, "eval_duration": 4232710000}


def test_ollamas_native_answers_give_the_split_and_its_own_timings() -> None:
    assert ollama.is_ollama("api/version 0.5.7") and not ollama.is_ollama("version 0.8.1")
    assert ollama.loaded_sizes(PS, "llama3:latest") == {
        "server_size_bytes": 5137025024, "server_size_vram_bytes": 3000000000}
    assert ollama.loaded_sizes(PS, "other") == {}
    assert ollama.timings(FINAL) == {"prompt_n": 26, "prompt_ms": 130.079,
                                     "predicted_n": 259, "predicted_ms": 4232.71}
    assert ollama.timings({"done": True}) is None
    body = ollama.generate_body("llama3", "hi", 8, 0)
    assert body["raw"] and body["options"]["num_predict"] == 8
    assert body["options"]["temperature"] == 0


@pytest.mark.slow
def test_an_attached_ollama_is_timed_through_its_native_api(tmp_path: Path,
                                                           cache_dir: Path) -> None:
    """A fake Ollama (its documented shapes): the row has Ollama's own timings beside the
    client's, the split from /api/ps, and `offload` where size_vram < size."""
    from tests.fakes.ollama import serve_fake_ollama

    with serve_fake_ollama() as url:
        results = tmp_path / "results"
        out = run_bench("engine=openai", f"engine.url={url}", "model=smollm2-135m",
                        "weights=real", "quant=fp16", "eval=none", *FAST,
                        f"results_dir={results}", "report=false", cwd=tmp_path,
                        cache=cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    row = pd.read_parquet(results).iloc[0]
    assert row.status == "ok", row.error
    assert row.engine_version.startswith("api/version")
    assert row.server_size_bytes == 2 * row.server_size_vram_bytes and bool(row.offload)
    timings = dict(row.engine_timings)
    assert timings["predicted_n"] == 8 * row.repeats  # Ollama's eval_count of each request
    assert timings["predicted_ms"] == pytest.approx(2 * 8 * row.repeats)
    assert row.engine_decode_tok_s > 0


@pytest.mark.slow
def test_the_real_llama_server_under_one_and_four_clients(tmp_path: Path,
                                                          cache_dir: Path) -> None:
    """The issue's done-when: the binary (built on first use from the engine's llama.cpp)
    serves the default model at 1 and 4 clients; rows carry its own timings and slots."""
    from bench.engines.llamacpp.tools import toolchain_problem

    if toolchain_problem():
        pytest.skip(toolchain_problem())
    results = tmp_path / "results"
    out = run_bench("-m", "engine=llama-server", "quant=gguf-q8_0", "eval=none",
                    "workload.concurrency=1,4", "workload.prompt_tokens=32",
                    "workload.new_tokens=16", "workload.repeats=3", "workload.min_duration_s=0",
                    "workload.warmup_until_steady=false", f"results_dir={results}",
                    "report=false", cwd=tmp_path, cache=cache_dir, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pd.read_parquet(results).set_index("concurrency").sort_index()
    assert list(rows.status) == ["ok", "ok"], rows.error.tolist()
    assert list(rows.server_slots) == [1, 4]
    assert (rows.server_slot_ctx == 4096).all()
    assert rows.server.str.startswith("llama_server").all()
    assert rows.engine_version.str.contains("commit").all()
    assert (rows.request_errors == 0).all(), rows.request_error.tolist()
    for _, row in rows.iterrows():
        timings = dict(row.engine_timings)
        assert timings["prompt_n"] == 32 * row.requests
        assert timings["predicted_n"] == 16 * row.requests
        assert timings["predicted_ms"] > 0
    four = rows.loc[4]
    assert four.server_busy_slots_per_decode > 1  # continuous batching served several
    assert 0 < four.server_kv_use_max < 1 and four.server_deferred_max == 0
    assert four.gguf_file_type == "Q8_0"
    builds = Path(os.environ["BENCH_LLAMACPP_TOOLS"]).glob("*/build.json")
    assert any("-DLLAMA_CURL=OFF" in json.loads(p.read_text())["cmake_args"] for p in builds)
