"""The results schema: one typed row per cell, and the Arrow schema derived from it.

The names are a contract (docs/design.md; docs/columns.md is generated from this module:
`python -m bench.core.schema > docs/columns.md`). Columns after the first groups are additions
(readers tolerate them). Every column is typed, so a column that is null in one
file and set in another still reads as one dataset; missing values are nulls, never zeros.
Units are bytes and seconds (milliseconds where the name says ``_ms``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa

STATUSES = ("ok", "oom", "error", "timeout", "skipped")
STATUS_FAILED = ("oom", "error", "timeout")  # the cell ran and did not finish
# Version of the row layout. 1: rows before the engine axis (no schema_version column, every
# one measured by transformers); 2: engine, engine_version, weights_origin, the engine's own
# speed counters; 3: task, and accuracy stored generically (task/metric maps, per-item
# outcomes); 4: gpu_util_pct named for what it is, gpu_kernel_time_pct.
# store.read_results migrates older rows on read, never drops them.
SCHEMA_VERSION = 4
# columns renamed, by the version that renamed them: old name -> new name
RENAMED = {4: {"gpu_util_pct": "gpu_kernel_time_pct"}}


def _col(group: str, doc: str) -> Any:
    return field(default=None, metadata={"group": group, "doc": doc})


@dataclass
class ResultRow:
    # identity
    cell_id: Optional[str] = _col("identity", "stable hash of the cell's settings")
    run_id: Optional[str] = _col("identity", "sweep invocation; the nightly passes the date")
    started_at: Optional[dt.datetime] = _col("identity", "UTC")
    finished_at: Optional[dt.datetime] = _col("identity", "UTC")
    status: Optional[str] = _col("identity", "ok | oom | error | timeout | skipped")
    error: Optional[str] = _col("identity", "one line: why the cell is not ok")
    model: Optional[str] = _col("identity", "conf/model name")
    hf_id: Optional[str] = _col("identity", "hub id or local directory")
    revision: Optional[str] = _col("identity", "commit the weights were loaded at")
    weights: Optional[str] = _col("identity", "real | synthetic | tiny")
    params: Optional[int] = _col("identity", "parameter count of the unquantized architecture")
    quant: Optional[str] = _col("identity", "conf/quant name")
    bits: Optional[int] = _col("identity", "nominal bits per quantized weight")
    gpu_class: Optional[str] = _col("identity", "conf/gpu name")
    emulated: Optional[bool] = _col("identity", "capacity emulated by an allocator cap")
    device_name: Optional[str] = _col("identity", "the device measured on")
    device_total_bytes: Optional[int] = _col("identity", "its total memory")
    batch_size: Optional[int] = _col("identity", "sequences per generate call")
    prompt_tokens: Optional[int] = _col("identity", "prompt length per sequence")
    new_tokens: Optional[int] = _col("identity", "generated tokens per sequence")
    # memory
    weights_bytes: Optional[int] = _col("memory", "summed tensor storage, subclasses unpacked")
    peak_alloc_bytes: Optional[int] = _col("memory", "CUDA allocator max_memory_allocated")
    peak_reserved_bytes: Optional[int] = _col("memory", "CUDA allocator max_memory_reserved")
    peak_device_bytes: Optional[int] = _col("memory", "NVML per-process peak, context included")
    context_bytes: Optional[int] = _col("memory", "CUDA context before the model: the "
                                        "process's device memory after a first matrix "
                                        "product in each dtype (cuBLAS and its kernels "
                                        "loaded), less what the allocator holds")
    peak_host_rss_bytes: Optional[int] = _col("memory", "peak resident host memory of the cell")
    # speed
    load_s: Optional[float] = _col("speed", "model load incl. quantization inside from_pretrained"
                                   " (bnb, torchao); separately timed quantization excluded")
    ttft_ms: Optional[float] = _col("speed", "time to first token, median")
    prefill_tok_s: Optional[float] = _col("speed", "batch*prompt_tokens / TTFT, median")
    decode_tok_s: Optional[float] = _col("speed", "batch*(new_tokens-1) / decode time, median")
    decode_ms_p50: Optional[float] = _col("speed", "per-token decode latency, median")
    decode_ms_p90: Optional[float] = _col("speed", "per-token decode latency, 90th percentile")
    repeats: Optional[int] = _col("speed", "timed generate calls")
    compiled: Optional[bool] = _col("speed", "forward pass under torch.compile")
    # accuracy
    mmlu_acc: Optional[float] = _col("accuracy", "size-weighted mean accuracy")
    mmlu_stderr: Optional[float] = _col("accuracy", "its standard error")
    mmlu_n: Optional[int] = _col("accuracy", "questions scored")
    mmlu_shots: Optional[int] = _col("accuracy", "few-shot examples")
    humaneval_pass1: Optional[float] = _col("accuracy", "greedy pass@1")
    humaneval_n: Optional[int] = _col("accuracy", "problems scored")
    eval_set: Optional[str] = _col("accuracy", "full | quick | offline")
    # provenance
    host: Optional[str] = _col("provenance", "hostname")
    git_sha: Optional[str] = _col("provenance", "bench commit")
    python: Optional[str] = _col("provenance", "")
    torch: Optional[str] = _col("provenance", "")
    cuda: Optional[str] = _col("provenance", "CUDA runtime torch was built with")
    driver: Optional[str] = _col("provenance", "NVIDIA driver")
    transformers: Optional[str] = _col("provenance", "")
    bitsandbytes: Optional[str] = _col("provenance", "")
    gptqmodel: Optional[str] = _col("provenance", "")
    lm_eval: Optional[str] = _col("provenance", "")
    config_yaml: Optional[str] = _col("provenance", "the cell's resolved configuration")
    # engine and origin
    engine: Optional[str] = _col("identity", "hf | llamacpp | openai: what ran the model")
    engine_version: Optional[str] = _col("provenance", "version of the engine's library "
                                         "(transformers, llama-cpp-python)")
    weights_origin: Optional[str] = _col("identity", "where the weights came from: the file "
                                         "and its type, how it was converted and quantized")
    schema_version: Optional[int] = _col("identity", "row layout version (older rows are "
                                         "migrated on read)")
    # quality: the next-token distribution against the model's reference precision
    ppl: Optional[float] = _col("quality", "perplexity on the quality text's scored tokens")
    ppl_delta: Optional[float] = _col("quality", "ppl minus the reference's on the same tokens")
    kld_mean: Optional[float] = _col("quality", "mean KL divergence from the reference, nats "
                                     "per token")
    kld_median: Optional[float] = _col("quality", "median KL divergence per token")
    kld_p99: Optional[float] = _col("quality", "99th percentile of the KL divergence")
    top1_agree: Optional[float] = _col("quality", "share of positions whose most likely token "
                                       "is the reference's (0-1)")
    quality_tokens: Optional[int] = _col("quality", "positions scored")
    # more accuracy
    mmlu_cloze_acc: Optional[float] = _col("accuracy", "MMLU in its continuation (cloze) form, "
                                           "size-weighted")
    mmlu_subjects: Optional[int] = _col("accuracy", "MMLU subjects scored")
    # serving: what clients of a server saw (in-process engines: one client)
    concurrency: Optional[int] = _col("serving", "clients sending requests at once")
    requests: Optional[int] = _col("serving", "timed requests (all clients)")
    throughput_tok_s: Optional[float] = _col("serving", "generated tokens of every client / "
                                             "wall time of the timed phase")
    ttft_ms_p90: Optional[float] = _col("serving", "time to first token, 90th percentile over "
                                        "requests")
    itl_ms_p50: Optional[float] = _col("serving", "inter-token latency (gap between streamed "
                                       "tokens), median")
    itl_ms_p90: Optional[float] = _col("serving", "inter-token latency, 90th percentile")
    itl_ms_p99: Optional[float] = _col("serving", "inter-token latency, 99th percentile")
    server: Optional[str] = _col("serving", "what served it: the server, its address and "
                                 "model, how bench started it (or that it was attached to)")
    # samples and conditions
    depth_tokens: Optional[list[int]] = _col("speed", "workload.depths: tokens already in the "
                                             "KV cache when the prompt came (llama-bench's "
                                             "-d), sorted")
    depth_prefill_tok_s: Optional[list[float]] = _col("speed", "at each depth, the prompt's "
                                                      "prefill tok/s (median)")
    depth_decode_tok_s: Optional[list[float]] = _col("speed", "at each depth, decode tok/s "
                                                     "(median)")
    depth_ttft_ms: Optional[list[float]] = _col("speed", "at each depth, TTFT (median)")
    decode_tok_s_samples: Optional[list[float]] = _col(
        "speed", "decode tok/s of every timed repeat, in order")
    ttft_ms_samples: Optional[list[float]] = _col("speed", "TTFT of every timed repeat, in order")
    load_avg: Optional[float] = _col("conditions", "1-minute load average at the end of the "
                                     "timed phase (this cell's own load included)")
    foreign_cpu_s: Optional[float] = _col("conditions", "CPU seconds other processes used "
                                          "while the cell was timed (/proc/stat minus its own)")
    # additions beyond the contract
    device: Optional[str] = _col("identity", "cpu | cuda")
    quantize_s: Optional[float] = _col("speed", "quantization / calibration after load")
    host_rss_baseline_bytes: Optional[int] = _col("memory", "host RSS before the model loads")
    peak_host_rss_load_bytes: Optional[int] = _col("memory", "peak host RSS during load")
    load_read_bytes: Optional[int] = _col("speed", "bytes the cell's processes fetched from "
                                          "storage while loading (/proc io read_bytes, "
                                          "memory-mapped weights included): near 0 is a warm "
                                          "load from the page cache")
    load_read_chars: Optional[int] = _col("speed", "bytes they read through read() while "
                                          "loading, page-cache hits included")
    load_read_note: Optional[str] = _col("speed", "why load_read_bytes is null")
    ttft_ms_stdev: Optional[float] = _col("speed", "spread of TTFT over repeats")
    decode_tok_s_stdev: Optional[float] = _col("speed", "spread of decode tok/s over repeats")
    error_detail: Optional[str] = _col("identity", "last lines of the traceback")
    eval_s: Optional[float] = _col("accuracy", "wall time of the accuracy phase")
    eval_batch_size: Optional[int] = _col("accuracy", "lm-eval batch size (results depend on it)")
    humaneval_stderr: Optional[float] = _col("accuracy", "standard error of pass@1")
    humaneval_isolation: Optional[str] = _col("accuracy", "sandbox used: bwrap | rlimits")
    eval_note: Optional[str] = _col("accuracy", "why an accuracy column is null")
    quant_note: Optional[str] = _col("identity", "quantization cache hit, kernel used")
    torchao: Optional[str] = _col("provenance", "")
    hqq: Optional[str] = _col("provenance", "")
    offload: Optional[bool] = _col("identity", "layers beyond a GPU budget placed in host RAM "
                                   "(offload=true, accelerate device_map=auto)")
    predicted_peak_bytes: Optional[int] = _col("memory", "lower bound of the peak from the "
                                               "architecture (bench.tasks.bounds): weights "
                                               "and KV cache; null where none holds "
                                               "(offload)")
    predicted_weights_bytes: Optional[int] = _col("memory", "lower bound of weights_bytes "
                                                  "from the architecture (the same bound's "
                                                  "weights)")
    accuracy_key: Optional[str] = _col("accuracy", "hash of what accuracy depends on (weights, "
                                       "scheme, engine, eval settings; not the workload)")
    engine_prefill_tok_s: Optional[float] = _col("speed", "prompt tok/s by the engine's own "
                                                 "counters for the same calls (llama.cpp's perf "
                                                 "context), median")
    engine_decode_tok_s: Optional[float] = _col("speed", "decode tok/s by the engine's own "
                                                "counters for the same calls, median")
    engine_build: Optional[str] = _col("provenance", "how the engine was built (llama.cpp's "
                                       "system info: CUDA, CPU features)")
    mmlu_source: Optional[str] = _col("accuracy", "the MMLU data: file and hash, questions "
                                      "scored, shots")
    quality_reference: Optional[str] = _col("quality", "the reference the KL is against, and "
                                            "the text (file, hash, tokens)")
    quality_s: Optional[float] = _col("quality", "wall time of the quality phase")
    timed_s: Optional[float] = _col("conditions", "wall time of the timed phase (warm-up "
                                    "excluded)")
    cpu_model: Optional[str] = _col("provenance", "the host CPU's model name")
    warmup_calls: Optional[int] = _col("speed", "untimed calls before the timed ones (until "
                                       "a call gained less than workload.steady_tolerance "
                                       "on the one before)")
    requests_per_s: Optional[float] = _col("serving", "finished requests / wall time of the "
                                           "timed phase")
    request_errors: Optional[int] = _col("serving", "requests that failed while timed")
    request_error: Optional[str] = _col("serving", "the first failed request's message")
    e2e_ms_p50: Optional[float] = _col("serving", "request sent to last byte, median")
    e2e_ms_p90: Optional[float] = _col("serving", "request sent to last byte, 90th percentile")
    tokens_short: Optional[int] = _col("serving", "tokens asked for and not generated (a server "
                                       "that stopped early); rates count generated tokens only")
    server_log: Optional[str] = _col("serving", "the log of the server bench started")
    server_kv_cache_tokens: Optional[int] = _col("serving", "KV-cache capacity the server "
                                                 "reports (vLLM), tokens")
    server_max_concurrency: Optional[float] = _col("serving", "sequences of its longest length "
                                                   "the KV cache holds at once (vLLM's word)")
    server_kv_cache_bytes: Optional[int] = _col("serving", "memory the server set aside for "
                                                "its KV cache (vLLM's word)")
    memory_note: Optional[str] = _col("memory", "why a memory column is null")
    host_pss_bytes: Optional[int] = _col("memory", "a server's processes' proportional set "
                                         "size at the end of the timed phase (shared pages "
                                         "counted once)")
    client_cpu_s: Optional[float] = _col("conditions", "CPU seconds bench's own client (the "
                                         "load generator) used while a server was timed")
    loglik_check: Optional[str] = _col("accuracy", "a server's prompt log-probabilities "
                                       "against its generation's (the self-test)")
    quality_note: Optional[str] = _col("quality", "why the quality columns are null")
    # the GPU: which one, in what state, who else was on it, how its peak was measured
    terminated_by: Optional[str] = _col("identity", "the signal from outside that ended the "
                                        "cell (SIGTERM: a time limit such as timeout(1)'s or "
                                        "a scheduler's, or a kill; its status is timeout): "
                                        "the same run_id measures it again")
    failed_phase: Optional[str] = _col("identity", "the phase a cell that did not finish "
                                       "stopped in (prepare, setup, load, speed, quality, "
                                       "eval): the figures of the phases before it are kept")
    device_peak_method: Optional[str] = _col(
        "memory", "how peak_device_bytes was measured: nvml-process (NVML's figure for the "
        "cell's PIDs) | nvml-device-rise (a container's PID namespace: the device's use "
        "minus its level before the cell, no other process being on the GPU)")
    peak_device_unseen_bytes: Optional[int] = _col(
        "memory", "how far NVML's 10 ms samples may have missed the device peak: the CUDA "
        "context plus the allocator's exact reserved peak, less peak_device_bytes, where "
        "positive (0: the samples saw at least that much); a ✅ needs peak + this within "
        "0.90 of the class")
    peak_device_load_bytes: Optional[int] = _col("memory", "device peak during load")
    peak_device_eval_bytes: Optional[int] = _col("memory", "device peak during quality and "
                                                 "accuracy (their own batches; not a verdict)")
    allocator_cap_bytes: Optional[int] = _col("memory", "the CUDA allocator's cap emulating a "
                                              "smaller class: the class minus the measured "
                                              "CUDA context")
    kv_cache_type: Optional[str] = _col("memory", "the KV cache's element type as the engine "
                                        "made it (llama.cpp: f16, q8_0, q4_0, ...; K/V when "
                                        "they differ, e.g. q8_0/q4_0; transformers: its cache "
                                        "tensors' dtype)")
    kv_cache_bytes: Optional[int] = _col("memory", "the KV cache the engine says it made for "
                                         "the speed context (llama.cpp's log, every device)")
    kv_cache_cells: Optional[int] = _col("memory", "context tokens that cache holds (llama.cpp "
                                         "rounds n_ctx up)")
    kv_cache_bytes_per_token: Optional[float] = _col(
        "memory", "the engine's own accounting: llama.cpp's kv_cache_bytes / kv_cache_cells "
        "(its log prints MiB to 0.01); transformers' cache tensors after a 16-token forward "
        "pass, per token")
    kv_cache_bytes_per_token_formula: Optional[int] = _col(
        "memory", "the same from the architecture for the engine's layout: 2 x layers x KV "
        "heads x head dim x bytes per element (f16 2, q8_0 34/32, q4_0 18/32)")
    compute_buffer_bytes: Optional[int] = _col("memory", "compute buffers the engine says it "
                                               "allocated (llama.cpp, every device)")
    gpu_uuid: Optional[str] = _col("provenance", "NVML's UUID of the GPU (or MIG slice) "
                                   "measured, found from the CUDA device's own UUID")
    gpu_pci_bus_id: Optional[str] = _col("provenance", "its PCI bus id")
    gpu_mig: Optional[bool] = _col("provenance", "a MIG slice (its own memory is the total)")
    gpu_power_limit_w: Optional[float] = _col("provenance", "enforced power limit, watts")
    cuda_driver: Optional[str] = _col("provenance", "newest CUDA version the driver supports")
    gpu_peak_bandwidth_gbs: Optional[float] = _col(
        "provenance", "the device's peak memory bandwidth, GB/s, from NVML: 2 x its maximum "
        "memory clock x its memory bus width (the roofline's bandwidth, whatever its name)")
    gpu_others_at_start: Optional[int] = _col("conditions", "other processes on the GPU when "
                                              "the cell started")
    gpu_used_at_start_bytes: Optional[int] = _col("conditions", "device memory in use when "
                                                  "the cell started (every process)")
    gpu_others_used_bytes: Optional[int] = _col("conditions", "of it, what other processes "
                                                "held")
    gpu_kernel_time_pct: Optional[float] = _col(
        "conditions", "share of time one or more kernels ran on the GPU over the timed window "
        "(NVML's utilization.gpu, mean of its samples): not SM occupancy, a single small "
        "kernel running counts as 100 (was gpu_util_pct before schema version 4)")
    gpu_sm_clock_mhz: Optional[float] = _col("conditions", "SM clock over the timed window")
    gpu_mem_clock_mhz: Optional[float] = _col("conditions", "memory clock over the timed "
                                              "window")
    gpu_foreign_processes: Optional[int] = _col("conditions", "most other processes on the "
                                                "GPU at once during the timed window")
    gpu_foreign_bytes: Optional[int] = _col("conditions", "most device memory they held")
    # vLLM's reservation and what the model needs of it
    server_gpu_memory_utilization: Optional[float] = _col(
        "serving", "vLLM's --gpu-memory-utilization set to emulate a smaller GPU class")
    server_weights_bytes: Optional[int] = _col("serving", "weights on the device (vLLM's log)")
    server_activation_bytes: Optional[int] = _col("serving", "activation peak of vLLM's "
                                                  "profiling run (its log)")
    server_non_torch_bytes: Optional[int] = _col("serving", "non-torch memory (vLLM's log)")
    server_cuda_graph_bytes: Optional[int] = _col("serving", "CUDA graphs (vLLM's log)")
    device_need_bytes: Optional[int] = _col(
        "memory", "what the model needs on the device where the engine reserves more (vLLM): "
        "the device peak less the KV cache reserved, plus the KV cache of the workload's "
        "sequences at its concurrency")
    server_kv_sequences: Optional[int] = _col("serving", "sequences of the workload's length "
                                              "the server's KV cache holds at once")
    # energy: hardware counters over the timed windows (bench.meters.energy)
    energy_j: Optional[float] = _col("energy", "joules the device's counter rose by over the "
                                     "timed calls (idle power not subtracted)")
    energy_prefill_j: Optional[float] = _col("energy", "joules of one call's prefill: the "
                                             "prefill-only calls' energy per call, idle "
                                             "subtracted")
    energy_decode_j: Optional[float] = _col("energy", "joules of one call's decode: a whole "
                                            "call's energy less its prefill's, idle "
                                            "subtracted")
    j_per_token: Optional[float] = _col("energy", "decode joules per generated token (idle "
                                        "subtracted)")
    tokens_per_j: Optional[float] = _col("energy", "generated tokens per decode joule")
    power_w: Optional[float] = _col("energy", "mean power over the timed calls, watts")
    idle_power_w: Optional[float] = _col("energy", "power over one idle second before them")
    energy_method: Optional[str] = _col("energy", "the counter (nvml-total-energy | rapl:"
                                        "package-N...) and what was subtracted")
    energy_note: Optional[str] = _col("energy", "why the energy columns are null")
    # the task axis, and accuracy stored generically (schema version 3)
    task: Optional[str] = _col("identity", "text-generation | image-text-to-text | "
                               "text-to-image | image-to-video: what the model does")
    accuracy: Optional[dict[str, float]] = _col(
        "accuracy", "every accuracy figure, keyed task/metric (mmlu/acc, mmlu_cloze/acc, "
        "humaneval/pass@1, ...)")
    accuracy_n: Optional[dict[str, int]] = _col("accuracy", "items scored, by task/metric")
    accuracy_stderr: Optional[dict[str, float]] = _col("accuracy", "standard error, by "
                                                       "task/metric")
    accuracy_outcomes: Optional[dict[str, str]] = _col(
        "accuracy", "per-item outcomes, by task/metric: 1 right, 0 wrong, items in a fixed "
        "order (leaf task, doc id) — pairable across rows with the same accuracy_items")
    accuracy_items: Optional[dict[str, str]] = _col("accuracy", "hash of which items the "
                                                    "outcomes are, in their order")
    phase_s: Optional[dict[str, float]] = _col(
        "conditions", "wall seconds of each phase as the parent saw them: start (spawn to "
        "the first word), prepare, setup, load, speed, eval, quality")

    energy_call_j: Optional[float] = _col("energy", "joules of one timed call, idle "
                                          "subtracted (an image call's whole energy)")
    # image generation: text-to-image, image-to-video (bench.tasks.diffusion)
    component_bytes: Optional[dict[str, int]] = _col(
        "memory", "weights of each pipeline component (unet, vae, text_encoder, ...), as "
        "stored: where a pipeline's memory is")
    component_peak_bytes: Optional[dict[str, int]] = _col(
        "memory", "CUDA allocator peak during each component's own calls (text encoders, "
        "denoiser, VAE encode / decode): weights resident then, activations and workspace; "
        "null on the CPU (no allocator to read)")
    image_call_s: Optional[float] = _col("speed", "median seconds of one pipeline call (a "
                                         "batch of images, or one video)")
    image_call_s_stdev: Optional[float] = _col("speed", "its standard deviation over the "
                                               "timed calls")
    image_call_s_samples: Optional[list[float]] = _col("speed", "every timed call's seconds")
    image_s: Optional[float] = _col("speed", "seconds per image (per frame of a video)")
    images_per_s: Optional[float] = _col("speed", "images (frames) per second")
    step_ms: Optional[float] = _col("speed", "median denoising step: the denoiser's calls "
                                    "(both halves of classifier-free guidance) and the "
                                    "scheduler")
    step_ms_p90: Optional[float] = _col("speed", "90th percentile of the steps")
    encoder_ms: Optional[float] = _col("speed", "text encoder(s) per call (image-to-video: "
                                       "the image encoder and the VAE's encode)")
    vae_decode_ms: Optional[float] = _col("speed", "the VAE's decode of the final latents "
                                          "per call")
    image_height: Optional[int] = _col("identity", "pixels high of each image")
    image_width: Optional[int] = _col("identity", "pixels wide")
    denoise_steps: Optional[int] = _col("identity", "denoising steps per call")
    guidance_scale: Optional[float] = _col("identity", "classifier-free guidance scale "
                                           "(image-to-video: the largest)")
    video_frames: Optional[int] = _col("identity", "frames per video (image-to-video)")
    # vision-language models (image-text-to-text)
    image_preprocess_ms: Optional[float] = _col("speed", "the processor's time to turn the "
                                                "image and prompt into model inputs "
                                                "(random weights: bench's own resize and "
                                                "normalization; Pix2Struct's patching by "
                                                "transformers' image processor)")
    vision_encode_ms: Optional[float] = _col("speed", "the vision tower's forward pass in a "
                                             "generate call (inside TTFT)")
    image_tokens: Optional[int] = _col("identity", "prompt positions that are the image's "
                                       "(placeholders its features replace)")
    psnr_db: Optional[float] = _col("quality", "PSNR of the images against the reference's "
                                    "(same prompt, seed and initial latents), dB; capped "
                                    "at 100 (identical)")
    ssim: Optional[float] = _col("quality", "SSIM against the reference's images (1: "
                                 "identical)")
    latent_mse: Optional[float] = _col("quality", "mean squared error of the final latents "
                                       "against the reference's")
    # what the quantized weights really are (GGUF: read from the file's tensor table)
    gguf_file_type: Optional[str] = _col("identity", "the GGUF's own file type, as llama.cpp "
                                         "names it on load (Q4_K_M, F16, ...)")
    bits_per_weight: Optional[float] = _col("identity", "weight storage × 8 / parameters (GGUF: "
                                            "file size, as llama.cpp prints it)")
    tensor_types: Optional[dict[str, float]] = _col("identity", "share of the weights by GGUF "
                                                    "tensor type (Q5_0, Q8_0, Q4_K, F32, ...)")
    quant_fallback: Optional[str] = _col("identity", "set when the scheme's own type holds "
                                         "less than half of the quantized weights: how much it "
                                         "holds and which row widths fell back (K-quants need "
                                         "rows that are a multiple of 256)")
    # what a server says about itself (llama-server's /slots and /metrics, Ollama's /api/ps)
    engine_timings: Optional[dict[str, float]] = _col("speed", "the engine's own counters "
                                                      "summed over the timed calls: prompt_n, "
                                                      "prompt_ms, predicted_n, predicted_ms "
                                                      "(llama-server's `timings`, llama.cpp's "
                                                      "perf context, Ollama's eval counts)")
    server_slots: Optional[int] = _col("serving", "llama-server's parallel slots (--parallel)")
    server_slot_ctx: Optional[int] = _col("serving", "context tokens per slot (llama-server's "
                                          "/slots n_ctx)")
    server_deferred_max: Optional[int] = _col("serving", "most requests waiting for a free "
                                              "slot at once while timed (/metrics "
                                              "requests_deferred, sampled)")
    server_kv_use_max: Optional[float] = _col("serving", "largest share of the slots' context "
                                              "held at once while timed (/slots: prompt + "
                                              "decoded tokens of the busy slots)")
    server_busy_slots_per_decode: Optional[float] = _col("serving", "slots advanced by each "
                                                         "llama_decode call on average "
                                                         "(continuous batching; /metrics)")
    server_size_bytes: Optional[int] = _col("serving", "the model's memory by the server's "
                                            "word (Ollama's /api/ps size)")
    server_size_vram_bytes: Optional[int] = _col("serving", "of that, on the GPU (Ollama's "
                                                 "/api/ps size_vram; less than size: "
                                                 "offloading to the CPU)")
    ppl_stderr: Optional[float] = _col("quality", "standard error of the perplexity (PPL × the "
                                       "standard error of the mean log-likelihood over the "
                                       "scored tokens, as llama-perplexity prints it)")
    accuracy_ci_low: Optional[dict[str, float]] = _col("accuracy", "lower end of the 95 % "
                                                       "Wilson interval, by task/metric")
    accuracy_ci_high: Optional[dict[str, float]] = _col("accuracy", "upper end of the 95 % "
                                                        "Wilson interval, by task/metric")
    token_intervals_ms: Optional[list[float]] = _col(
        "speed", "every timed call's per-token decode intervals (ms), the calls one after "
        "another (token_intervals_per_call says where each ends): the run's level for the "
        "regression test, each call's trimmed mean")
    token_intervals_per_call: Optional[list[int]] = _col(
        "speed", "how many of token_intervals_ms each timed call (request) contributed")
    accuracy_pending: Optional[bool] = _col("accuracy", "true: the row's speed, memory and "
                                            "quality are in, its accuracy runs in the sweep's "
                                            "second stage (accuracy_last); false: it ran "
                                            "there, on the model loaded again; null: in one go")


_ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> pa.DataType:
    (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(inner)
    if origin is list:
        return pa.list_(_ARROW_TYPES[typing.get_args(inner)[0]])
    if origin is dict:
        key, value = typing.get_args(inner)
        return pa.map_(_ARROW_TYPES[key], _ARROW_TYPES[value])
    return _ARROW_TYPES[inner]


_HINTS = typing.get_type_hints(ResultRow)
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ResultRow))
ARROW_SCHEMA = pa.schema([pa.field(name, _arrow_type(_HINTS[name])) for name in COLUMNS])
# Accuracy figures a cell may take over from another cell of its run with the same
# accuracy_key (bench.sweep.runner): the results of the evaluation, not its timing.
REUSABLE_ACCURACY = ("mmlu_acc", "mmlu_stderr", "mmlu_n", "mmlu_shots", "humaneval_pass1",
                     "humaneval_n", "humaneval_stderr", "humaneval_isolation", "eval_set",
                     "eval_batch_size", "mmlu_cloze_acc", "mmlu_subjects", "mmlu_source",
                     "ppl", "ppl_delta", "kld_mean", "kld_median", "kld_p99", "top1_agree",
                     "quality_tokens", "quality_reference", "accuracy", "accuracy_n",
                     "accuracy_stderr", "accuracy_outcomes", "accuracy_items", "ppl_stderr",
                     "accuracy_ci_low", "accuracy_ci_high")


def column_docs() -> list[tuple[str, str, str]]:
    """(group, name, doc) for every column, in the row's order."""
    return [(f.metadata["group"], f.name, f.metadata["doc"]) for f in dataclasses.fields(ResultRow)]


def columns_markdown() -> str:
    """docs/columns.md: every column by group, with its Arrow type and meaning."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for group, name, doc in column_docs():
        groups.setdefault(group, []).append((name, doc))
    out = ["# Result columns", "",
           f"One Parquet row per cell (`results/<run_id>/<cell_id>.parquet`), schema version "
           f"{SCHEMA_VERSION}; older rows are migrated on read, never dropped. Missing values "
           f"are nulls, never zeros; bytes and seconds unless a name says `_ms`, `_mib`, `_w`, "
           f"`_j`. Generated from `bench/core/schema.py` (`python -m bench.core.schema`): a "
           f"test keeps this page equal to it.", ""]
    for group, columns in groups.items():
        out += [f"## {group}", "", "| column | type | meaning |", "|---|---|---|"]
        for name, doc in columns:
            meaning = doc.replace("|", "\\|")
            out.append(f"| `{name}` | {ARROW_SCHEMA.field(name).type} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(columns_markdown(), end="")
