"""The plan: validation before any work, dry runs, stable cell ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.core.errors import BenchInputError
from bench.sweep.plan import choices, make_plan, with_default_sweep
from tests.conftest import run_bench


def plan(*args: str):
    return make_plan(with_default_sweep(list(args)))


def test_default_sweep_is_a_real_model_through_both_engines() -> None:
    cells = plan()
    assert {c.config.model.name for c in cells} == {"smollm2-135m"}
    by_quant = {c.config.quant.name: c.config for c in cells}
    assert set(by_quant) == {"fp32", "bnb-int8", "bnb-nf4", "gguf-q8_0", "gguf-q4_k_m"}
    assert {q: c.resolved_engine for q, c in by_quant.items()} == {
        "fp32": "hf", "bnb-int8": "hf", "bnb-nf4": "hf", "gguf-q8_0": "llamacpp",
        "gguf-q4_k_m": "llamacpp"}
    assert all(c.resolved_weights == "packaged" and c.eval.name == "offline-small"
               and c.eval.mmlu_limit == 3 for c in by_quant.values())


@pytest.mark.slow
def test_llama2_sweep_is_every_model_by_scheme_by_context_with_full_eval() -> None:
    cells = plan("+sweep=llama2")
    models = {c.config.model.name for c in cells}
    quants = {c.config.quant.name for c in cells}
    prompts = {c.config.workload.prompt_tokens for c in cells}
    assert {"llama2-7b", "llama2-13b", "llama2-70b", "llama2-7b-chat"} <= models
    assert quants == {"fp16", "bnb-int8", "bnb-nf4", "bnb-nf4-dq", "gptq-int4", "awq-int4"}
    assert prompts == {512, 3968}
    assert len(cells) == len(models) * len(quants) * len(prompts)
    assert all(c.config.workload.batch_size == 1 and c.config.workload.new_tokens == 128
               and c.config.eval.name == "full" for c in cells)
    # the synthetic GPU run of the issue: the same cells, memory and speed only
    synthetic = plan("+sweep=llama2", "weights=synthetic", "eval=none")
    assert len(synthetic) == len(cells)
    assert {c.config.eval.name for c in synthetic} == {"none"}


def test_command_line_sweep_overrides_the_sweep_file() -> None:
    cells = plan("+sweep=llama2", "model=llama2-7b", "quant=bnb-nf4,fp16",
                 "workload.prompt_tokens=512")
    assert [(c.config.model.name, c.config.quant.name) for c in cells] == [
        ("llama2-7b", "bnb-nf4"), ("llama2-7b", "fp16")]


def test_cell_ids_are_stable_and_distinct() -> None:
    first = [c.cell_id for c in plan()]
    assert first == [c.cell_id for c in plan()]
    assert len(set(first)) == len(first)
    # Where results go is not part of a cell's identity; what is measured is.
    assert plan("results_dir=/elsewhere")[0].cell_id == first[0]
    assert plan("workload.new_tokens=65")[0].cell_id != first[0]


@pytest.mark.parametrize("args, words", [
    (["model=nope"], ["model=nope", "valid choices", "tiny-llama", "llama2-7b"]),
    (["quant=fp32,nope"], ["quant=nope", "bnb-nf4"]),
    (["gpu=rtx9090"], ["gpu=rtx9090", "rtx4090-24gb"]),
    (["+sweep=nope"], ["sweep=nope", "llama2"]),
    (["weights=bogus"], ["weights", "real, synthetic, tiny"]),
    (["workload.repeats=1"], ["workload.repeats", ">= 3"]),
    (["workload.batch_size=abc"], ["workload.batch_size"]),
    (["quant.nonsense=1"], ["quant.nonsense"]),
    (["model=llama2-7b", "weights=tiny"], ["weights=tiny", "tiny models"]),
    (["cell.device=tpu"], ["cell.device", "auto, cpu, cuda"]),
    (["quant=["], ["malformed override"]),
    (["offload=true", "cell.device=cpu"], ["offload=true", "cell.device=cpu"]),
    (["offload=true", "quant=gptq-int4"], ["offload=true", "none and bnb", "gptq"]),
])
def test_bad_input_is_one_clear_error(args: list[str], words: list[str]) -> None:
    with pytest.raises(BenchInputError) as info:
        plan(*args)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_choices_come_from_conf() -> None:
    assert {"llama2-7b", "llama2-13b", "llama2-70b", "tiny-llama"} <= set(choices("model"))
    assert {"fp32", "bf16", "bnb-int8", "bnb-nf4"} <= set(choices("quant"))


def test_cli_unknown_model_exits_with_one_line_and_writes_nothing(tmp_path: Path,
                                                                  cache_dir: Path) -> None:
    results = tmp_path / "results"
    proc = run_bench("model=nope", f"results_dir={results}", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model=nope" in lines[0] and "llama2-7b" in lines[0]
    assert not results.exists()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_cli_dry_run_prints_one_line_per_cell(tmp_path: Path, cache_dir: Path) -> None:
    proc = run_bench("+sweep=llama2", "dry_run=true", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("72 cells")
    assert len(lines) == 73
    assert all("model=llama2-" in line and "quant=" in line for line in lines[1:])
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, words", [
    (["engine=llamacpp", "quant=bnb-nf4"], ["engine=llamacpp", "bnb-nf4", "gguf-q4_k_m",
                                            "fp16"]),
    (["engine=hf", "quant=gguf-q4_k_m"], ["engine=hf", "gguf-q4_k_m", "bnb-nf4"]),
    (["engine=llamacpp", "quant=fp16", "cell.compile=true"], ["cell.compile", "llamacpp"]),
    (["quant=gguf-q4_0", "workload.batch_size=2"], ["workload.batch_size=2", "llamacpp"]),
    (["quant=gguf-q4_0", "offload=true"], ["offload=true", "n_gpu_layers"]),
    (["engine=hf", "quant=fp32", "engine.n_gpu_layers=3"],
     ["engine.n_gpu_layers", "engine=hf", "llamacpp"]),
    (["quant=fp32", "engine.n_gpu_layers=3"], ["engine.n_gpu_layers", "name the engine"]),
    (["quant=gguf-q4_0", "model=falcon-7b", "weights=synthetic"], ["falcon", "llama"]),
    (["engine=tgi"], ["engine=tgi", "llamacpp"]),
    (["engine=vllm", "quant=bnb-int8"], ["engine.server=vllm", "bnb-int8", "none"]),
    (["engine=llamacpp", "quant=gguf-q4_0", "workload.concurrency=4"],
     ["workload.concurrency=4", "engine=openai"]),
    (["quant=gguf-q4_0", "quant.bits=5"], ["quant.bits=5", "Q4_0"]),
])
def test_an_impossible_engine_combination_is_one_line(args: list[str], words: list[str]) -> None:
    with pytest.raises(BenchInputError) as info:
        plan("model=tiny-llama", "eval=none", *args)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_cli_refuses_an_engine_that_cannot_run_the_scheme(tmp_path: Path,
                                                         cache_dir: Path) -> None:
    results = tmp_path / "results"
    proc = run_bench("engine=llamacpp", "quant=bnb-nf4", f"results_dir={results}",
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "engine=llamacpp" in lines[0] and "gguf-q4_k_m" in lines[0]
    assert not results.exists() and not (tmp_path / "outputs").exists()


def test_dry_run_lists_both_engines_cells(tmp_path: Path, cache_dir: Path) -> None:
    proc = run_bench("-m", "quant=fp32,bnb-nf4,gguf-q8_0,gguf-q4_k_m", "dry_run=true",
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("4 cells")
    assert sum("engine=hf " in line for line in lines) == 2
    assert sum("engine=llamacpp " in line for line in lines) == 2
