"""What each engine does on CUDA that a CPU can check: the server command lines (vLLM sized
per class with CUDA graphs on, llama.cpp pinned to one GPU), what their logs say they hold,
vLLM's need against its reservation, and synthetic weights that follow the seed."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.engines.base import Device
from bench.engines.llamacpp.buffers import device_buffers
from bench.engines.openai import engine as served
from bench.engines.openai.kinds import vllm
from bench.engines.openai.served import ServedModel
from bench.sweep.plan import make_plan

CPU, CUDA = Device("cpu"), Device("cuda", 0)
GIB = 2**30

# vLLM's start-up lines as its CUDA builds print them (v1 engine), and an older wording
VLLM_LOG = (
    "INFO 12-01 10:00:03 [gpu_model_runner.py:2007] Model loading took 12.5523 GiB memory and "
    "4.1 seconds\n"
    "DEBUG 12-01 10:00:09 [gpu_worker.py:276] Memory profiling takes 5.11 seconds. Total non "
    "KV cache memory: 14.02GiB; torch peak memory increase: 1.21GiB; non-torch forward "
    "increase memory: 0.26GiB; weights memory: 12.55GiB.\n") + """\
INFO 12-01 10:00:09 [gpu_worker.py:277] Available KV cache memory: 106.65 GiB
INFO 12-01 10:00:09 [kv_cache_utils.py:849] GPU KV cache size: 218,416 tokens
INFO 12-01 10:00:09 [kv_cache_utils.py:853] Maximum concurrency for 4,096 tokens per request: 53.32x
INFO 12-01 10:00:21 [gpu_model_runner.py:2708] Graph capturing finished in 12 secs, took 0.49 GiB
"""
VLLM_V0_LOG = ("INFO worker.py:267] model weights take 4.03GiB; non_torch_memory takes 1.39GiB; "
               "PyTorch activation peak memory takes 0.32GiB; the rest of the memory reserved "
               "for KV Cache is 65.65GiB.\n")


def cfg(*args: str):
    return make_plan(["model=tiny-llama", "eval=none", "cell.device=cpu", *args])[0].config


def test_vllm_runs_with_cuda_graphs_on_a_gpu_and_eager_on_a_cpu(cache_dir: Path) -> None:
    c = cfg("engine=vllm", "quant=fp32", "engine.server_python=/usr/bin/python3")
    gpu_cmd, _, _ = served.command_line(c, CUDA, "python", 8000, utilization=0.1686)
    cpu_cmd, _, _ = served.command_line(c, CPU, "python", 8000)
    assert "--enforce-eager" not in gpu_cmd and "--enforce-eager" in cpu_cmd
    assert gpu_cmd[gpu_cmd.index("--gpu-memory-utilization") + 1] == "0.1686"
    assert "--gpu-memory-utilization" not in cpu_cmd
    asked = cfg("engine=vllm", "quant=fp32", "engine.eager=true",
                "engine.server_args=['--gpu-memory-utilization=0.5']")
    cmd, _, _ = served.command_line(asked, CUDA, "python", 8000, utilization=0.2)
    assert "--enforce-eager" in cmd and cmd.count("--gpu-memory-utilization=0.5") == 1
    assert "--gpu-memory-utilization" not in cmd  # the user's own setting wins


def test_vllm_emulates_a_class_by_its_share_of_the_card(monkeypatch) -> None:
    class Card:
        def total_bytes(self) -> int:
            return 143_771 * 2**20

    monkeypatch.setattr("bench.core.gpu.device_for_ordinal", lambda ordinal: Card())
    engine = served.OpenAIEngine()
    c = cfg("engine=vllm", "quant=fp32", "gpu=rtx4090-24gb")
    fields = engine.emulate_class(c, CUDA, 24_564 * 2**20, None)
    assert fields == {"server_gpu_memory_utilization": 24_564 / 143_771}
    assert engine.gpu_memory_utilization == 24_564 / 143_771
    assert served.OpenAIEngine().emulate_class(cfg("engine=llamacpp-server"), CUDA,
                                               24 * GIB, None) is None


def test_vllm_memory_and_its_need_come_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(VLLM_LOG)
    memory = vllm.memory(log)
    assert memory["server_weights_bytes"] == int(12.55 * GIB)  # the last wording wins
    assert memory["server_activation_bytes"] == int(1.21 * GIB)
    assert memory["server_non_torch_bytes"] == int(0.26 * GIB)
    assert memory["server_cuda_graph_bytes"] == int(0.49 * GIB)
    kv = vllm.kv_facts(log)
    assert kv["server_kv_cache_tokens"] == 218_416 and kv["server_max_concurrency"] == 53.32
    assert kv["server_kv_cache_bytes"] == int(106.65 * GIB)
    old = tmp_path / "old.log"
    old.write_text(VLLM_V0_LOG)
    assert vllm.memory(old)["server_non_torch_bytes"] == int(1.39 * GIB)

    class Server:
        name, log_path = "vllm", log

    c = cfg("engine=vllm", "quant=fp32", "workload.prompt_tokens=500",
            "workload.new_tokens=100", "workload.concurrency=4")
    model = ServedModel(c, client=None, server=Server(), weights_bytes=None)  # type: ignore[arg-type]
    peak = 130 * GIB  # NVML: the whole reservation
    need = model.device_need(peak)
    per_token = int(106.65 * GIB) / 218_416
    sequence = 608  # 600 tokens in 16-token blocks
    assert need["server_kv_sequences"] == 218_416 // sequence
    assert need["device_need_bytes"] == int(peak - int(106.65 * GIB) + 4 * sequence * per_token)
    assert need["device_need_bytes"] < 25 * GIB  # what a 7B needs, not the 130 GiB reserved


def test_llamacpp_is_pinned_to_one_gpu_and_its_buffers_are_read_from_its_log() -> None:
    c = cfg("engine=llamacpp-server", "quant=gguf-q8_0")
    from bench.engines.llamacpp import split_mode

    assert split_mode(c) == 0  # none: llama.cpp's own default (layer) spreads over every GPU
    assert split_mode(cfg("engine=llamacpp", "quant=gguf-q8_0", "engine.split_mode=layer")) == 1
    log = ("load_tensors:        CUDA0 model buffer size =  3577.56 MiB\n"
           "load_tensors:   CPU_Mapped model buffer size =    70.31 MiB\n"
           "llama_kv_cache:      CUDA0 KV buffer size =   256.00 MiB\n"
           "llama_context:  CUDA_Host  output buffer size =     0.12 MiB\n"
           "llama_context:      CUDA0 compute buffer size =   164.01 MiB\n"
           "llama_context:      CUDA1 compute buffer size =    10.00 MiB\n")
    assert device_buffers(log) == int((3577.56 + 256.0 + 164.01) * 2**20)
    assert device_buffers(log, "CUDA1") == 10 * 2**20
    assert device_buffers("no buffers here") is None


def test_synthetic_weights_follow_the_seed() -> None:
    from bench.weights.random_weights import SeededRandom

    shape = torch.Size([64, 32])
    a = SeededRandom(7).normal(shape, torch.float32, torch.device("cpu"))
    b = SeededRandom(7).normal(shape, torch.float32, torch.device("cpu"))
    c = SeededRandom(8).normal(shape, torch.float32, torch.device("cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.std()) - 0.02) < 0.005
