"""Capacity planning: the predicted-OOM lower bound, predicted skips, offload placement, and
accuracy reused across workloads of one run."""

from __future__ import annotations

from pathlib import Path

import accelerate
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from bench.engines.base import OffloadBudget
from bench.engines.hf.footprint import weights_bytes
from bench.engines.hf.loading import load_synthetic
from bench.engines.hf.offload import device_of, host_share, on_gpu, plan_device_map
from bench.engines.hf.quant import KEEP_UNQUANTIZED, load_time_config, torch_dtype
from bench.sweep.plan import make_plan
from bench.sweep.runner import measure_again
from bench.tasks.bounds import predict_peak
from bench.weights.arch import hf_config
from tests.conftest import FAST, run_bench

CPU = torch.device("cpu")
GIB = 2**30


def cfg(*args: str):
    return make_plan(list(args))[0].config


def test_llama2_7b_bound_is_its_fp16_weights_and_kv_cache() -> None:
    prediction = predict_peak(cfg("model=llama2-7b", "quant=fp16", "weights=synthetic",
                                  "workload.prompt_tokens=512", "workload.new_tokens=128"))
    assert prediction.weights_bytes == 6_738_415_616 * 2
    # K and V x 32 layers x 32 heads x 128 dims x 639 tokens x 2 bytes: generate caches
    # prompt + new - 1 (the last token is never fed back)
    assert prediction.kv_tokens == 639
    assert prediction.kv_cache_bytes == 2 * 32 * 32 * 128 * 639 * 2
    nf4 = predict_peak(cfg("model=llama2-7b", "quant=bnb-nf4", "weights=synthetic"))
    assert 3.2 * GIB < nf4.weights_bytes < 3.6 * GIB  # 6.48B at 4 bits + 0.26B at bf16


def test_prediction_is_a_lower_bound_of_the_built_model(cache_dir: Path) -> None:
    for quant in ("fp32", "bf16", "bnb-int8", "bnb-nf4"):
        config = cfg("model=tiny-llama", f"quant={quant}", "weights=synthetic",
                     "workload.prompt_tokens=40", "workload.new_tokens=8")
        prediction = predict_peak(config)
        model = load_synthetic(config.model.arch, config.quant, CPU, seed=0).model
        actual = weights_bytes(model)
        assert 0.75 * actual <= prediction.weights_bytes <= actual, quant
        ids = torch.randint(0, config.model.arch.vocab_size, (1, 40))
        with torch.no_grad():  # what the speed phase runs: 40 prompt tokens, 8 new
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 min_new_tokens=8, do_sample=False, pad_token_id=0,
                                 return_dict_in_generate=True)
        assert out.sequences.shape[1] == 48
        cache = out.past_key_values
        kv = sum(t.numel() * t.element_size() for layer in cache.layers
                 for t in (layer.keys, layer.values))
        assert prediction.kv_cache_bytes == kv, quant  # 47 tokens: the bound is exact


@pytest.mark.slow
def test_predicted_oom_is_a_skipped_row_with_its_basis(tmp_path: Path, cache_dir: Path) -> None:
    results = tmp_path / "results"
    proc = run_bench("-m", "model=llama2-70b", "quant=fp16", "weights=synthetic", "eval=none",
                     "skip_predicted_oom=true", "offload=false,true", "run_id=r1",
                     f"results_dir={results}", "report=false", *FAST, cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_parquet(results).set_index("offload")
    predicted = rows.loc[False]
    assert predicted["status"] == "skipped"
    assert predicted["error"].startswith("predicted OOM: peak >= 128.5 GiB > ")
    assert "of host RAM" in predicted["error"] and "68.98B params at float16" in predicted["error"]
    assert predicted["predicted_peak_bytes"] >= 68_976_648_192 * 2
    assert pd.isna(predicted["weights_bytes"]) and pd.isna(predicted["load_s"])
    offloaded = rows.loc[True]
    assert offloaded["status"] == "skipped" and "needs a CUDA device" in offloaded["error"]


def test_predicted_skips_are_measured_again_once_the_switch_is_off() -> None:
    skipped = {"status": "skipped", "predicted_peak_bytes": 10,
               "error": "predicted OOM: peak >= 128.5 GiB > 23.6 GiB"}
    assert measure_again(cfg("model=tiny-llama"), skipped)
    assert not measure_again(cfg("model=tiny-llama", "skip_predicted_oom=true"), skipped)
    # every row carries its bound now: only a predicted-OOM skip is measured again
    other_skip = {"status": "skipped", "predicted_peak_bytes": 10,
                  "error": "offload=true needs a CUDA device to offload from"}
    assert not measure_again(cfg("model=tiny-llama"), other_skip)
    assert not measure_again(cfg("model=tiny-llama"), {"status": "error"})
    assert measure_again(cfg("model=tiny-llama", "cell.retry_failed=true"), {"status": "error"})


def _device_map(quant: str, budget: OffloadBudget):
    config = cfg("model=llama2-7b", f"quant={quant}", "weights=synthetic", "offload=true")
    with accelerate.init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(hf_config(config.model.arch),
                                                 dtype=torch_dtype(config.quant))
    bnb = load_time_config(config.quant, offload=True) if config.quant.method == "bnb" else None
    if bnb is not None:
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear

        model = replace_with_bnb_linear(model, modules_to_not_convert=KEEP_UNQUANTIZED,
                                        quantization_config=bnb)
    return model, plan_device_map(model, bnb, torch.device("cuda", 0), budget)


def test_offload_fills_the_gpu_budget_and_counts_quantized_sizes() -> None:
    budget = OffloadBudget(gpu_bytes=3 * GIB, host_bytes=20 * GIB)
    fp16_model, fp16_map = _device_map("fp16", budget)
    on_device = sum(p.numel() * 2 for name, p in fp16_model.named_parameters()
                    if on_gpu(device_of(name.rpartition(".")[0], fp16_map)))
    assert 0 < on_device <= budget.gpu_bytes
    nf4_model, nf4_map = _device_map("bnb-nf4", budget)
    fp16_host, nf4_host = host_share(fp16_model, fp16_map), host_share(nf4_model, nf4_map)
    # 4-bit layers are sized at half a byte per weight, so far more of them fit the budget
    assert 0.5 < fp16_host < 1 and 0 < nf4_host < fp16_host - 0.3


@pytest.mark.slow
def test_accuracy_is_reused_across_workloads_of_one_run(tmp_path: Path,
                                                        cache_dir: Path) -> None:
    results = tmp_path / "results"
    proc = run_bench("-m", "model=tiny-llama", "quant=bf16", "eval=offline",
                     "eval.humaneval=false", "eval.mmlu_limit=1", "eval.quality_chunks=1",
                     "eval.mmlu_subjects=[anatomy,virology]",
                     "eval.quality_chunk_tokens=64", "workload.prompt_tokens=16,24",
                     "workload.new_tokens=8", "workload.repeats=3", "run_id=r1",
                     f"results_dir={results}", "report=false", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_parquet(results).sort_values("prompt_tokens").reset_index()
    assert list(rows["status"]) == ["ok", "ok"]
    first, second = rows.iloc[0], rows.iloc[1]
    assert first["accuracy_key"] == second["accuracy_key"]
    assert first["cell_id"] != second["cell_id"]
    assert first["mmlu_n"] > 0 and first["eval_s"] > 0 and pd.isna(first["eval_note"])
    assert second["mmlu_acc"] == first["mmlu_acc"] and second["mmlu_n"] == first["mmlu_n"]
    assert second["kld_mean"] == first["kld_mean"] > 0  # quality too: the same weights
    assert pd.isna(second["eval_s"])  # not evaluated again
    assert second["eval_note"].startswith(f"accuracy reused from cell {first['cell_id']}")
    assert second["decode_tok_s"] > 0  # its own speed was measured


def test_llamacpp_keeps_the_token_embeddings_of_an_untied_model_on_the_host() -> None:
    """llama.cpp assigns the input layer to the CPU whatever -ngl says (llama-model.cpp:
    "very little benefit to offloading the input layer"): the device bound leaves an untied
    model's token_embd out; a tied model's output head is that table, on the GPU."""
    untied = predict_peak(cfg("model=llama2-7b", "quant=gguf-f16", "weights=synthetic"))
    table = 32_000 * 4096
    assert untied.host_params == table
    assert untied.weights_bytes == (6_738_415_616 - table) * 2
    assert "token embeddings (0.13B) on the host" in untied.basis(
        cfg("model=llama2-7b", "quant=gguf-f16", "weights=synthetic"))
    hf = predict_peak(cfg("model=llama2-7b", "quant=fp16", "weights=synthetic"))
    assert hf.host_params == 0 and hf.weights_bytes == 6_738_415_616 * 2
    served = predict_peak(cfg("model=llama2-7b", "quant=gguf-q8_0", "weights=synthetic",
                              "engine=llamacpp-server"))
    assert served.host_params == table
    tied = predict_peak(cfg("model=falcon-7b", "quant=gguf-f16", "weights=real"))
    assert tied.host_params == 0


def test_offload_leaves_a_cell_without_a_bound() -> None:
    """Layers the engine may keep in host RAM are outside any device bound: llama.cpp with
    fewer GPU layers than the model's, a llama.cpp server likewise, an attached server,
    diffusers' offload modes."""
    from bench.tasks import task_of

    def bound(*args: str):
        c = cfg(*args)
        return task_of(c).lower_bound(c)

    base = ("model=llama2-7b", "quant=gguf-q4_k_m", "weights=synthetic", "engine=llamacpp")
    assert bound(*base) is not None
    assert bound(*base, "engine.n_gpu_layers=-1") is not None
    assert bound(*base, "engine.n_gpu_layers=33") is not None  # 32 layers + the output
    assert bound(*base, "engine.n_gpu_layers=20") is None
    assert bound("model=llama2-7b", "quant=gguf-q4_k_m", "weights=synthetic",
                 "engine=llamacpp-server", "engine.n_gpu_layers=8") is None
    assert bound("model=llama2-7b", "quant=fp16", "weights=real", "engine=openai",
                 "engine.url=http://127.0.0.1:8000") is None
    sd = bound("model=sd-1.5", "quant=fp16", "weights=synthetic")
    assert sd is not None and sd.weights_bytes == 1_066_235_307 * 2 and sd.kv_cache_bytes == 0
    assert sd.basis_of(cfg("model=sd-1.5", "quant=fp16", "weights=synthetic").quant
                       ).startswith("weights only >= 2.0 GiB")
    assert bound("model=sd-1.5", "quant=fp16", "weights=synthetic", "engine=diffusion",
                 "engine.offload=model") is None
