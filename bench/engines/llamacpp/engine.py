"""The llama.cpp engine: a GGUF file opened by llama-cpp-python in this process.

Speed is a greedy loop on llama.cpp's own C API (llama_decode, then the argmax of the last
logits): the prompt in `n_batch` chunks, then one token per decode, exactly `new_tokens`
tokens whatever the end-of-sequence token says, each stamped once its logits exist (reading
them synchronizes the device). llama.cpp's perf counters for the same calls (prompt and
token evaluation time) are reset before every call and stored beside bench's figures.
Memory is what the process holds: weights_bytes is llama.cpp's own model size (the GGUF
tensor data), host and device peaks come from bench's pollers. The speed context holds
exactly the workload's tokens (llama.cpp pads n_ctx); evaluation opens a second context
with every position's logits after the speed phase, so it cannot inflate those figures.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import llama_cpp
import numpy as np

from bench.core.config import BenchConfig
from bench.core.errors import OutOfMemory, SkipCell
from bench.engines.base import (
    Device,
    DeviceInfo,
    Engine,
    GenerationTiming,
    LoadedModel,
    OffloadBudget,
    card_device_info,
    cpu_threads,
    nvml_sees_cuda,
)
from bench.engines.llamacpp import CAPABILITIES, EVAL_CONTEXT, split_mode
from bench.engines.llamacpp.buffers import device_buffers
from bench.engines.llamacpp.files import (
    GgufFile,
    ensure_file,
    llama_cpp_version,
    prepared_file,
)
from bench.engines.llamacpp.kv_cache import ggml_types, kv_cache_facts, kv_words
from bench.engines.llamacpp.lm import LlamaCppLM, log_softmax

_LOG = deque(maxlen=400)
_LOADED: deque[str] = deque(maxlen=4000)  # the log since the last model was opened
_OOM_MARKERS = ("out of memory", "failed to allocate", "unable to allocate",
                "cudamalloc failed", "cannot allocate", "bad_alloc")


_DEBUG, _CONTINUED = 1, 5  # ggml_log_level (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4)
_last_level = [0]


@llama_cpp.llama_log_callback
def _log_line(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log (debug lines left out) goes to the cell's log file, and its tail is
    kept to explain failures."""
    if level != _CONTINUED:
        _last_level[0] = level
    if _last_level[0] == _DEBUG:
        return
    line = text.decode("utf-8", errors="replace")
    _LOG.append(line)
    _LOADED.append(line)
    sys.stderr.write(line)


llama_cpp.llama_log_set(_log_line, ctypes.c_void_p(0))


def _cuda_visible() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload()) and nvml_sees_cuda()


def amx_in_use() -> bool:
    """Whether llama.cpp's AMX kernels would run: built with them (-march=native on an AMX
    CPU) and the CPU has AMX. They crash in ggml_backend_amx_mul_mat (llama.cpp issue 20824,
    closed unfixed; seen here on every quantized type they handle), so repacking into the
    AMX buffer is turned off there, as `llama-cli --no-repack` does."""
    built = b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()
    try:
        with open("/proc/cpuinfo") as fh:
            return built and " amx_int8" in fh.read()
    except OSError:
        return built


def repack(cfg: BenchConfig) -> bool:
    return cfg.engine.repack if cfg.engine.repack is not None else not amx_in_use()


@contextmanager
def _model_params(use_extra_bufts: bool) -> Iterator[None]:
    """llama-cpp-python's Llama() does not expose use_extra_bufts (llama.cpp's --repack):
    set it in the default model parameters Llama() starts from, for this call only."""
    original = llama_cpp.llama_cpp.llama_model_default_params

    def params() -> Any:
        out = original()
        out.use_extra_bufts = use_extra_bufts
        return out

    llama_cpp.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = original


def _open(path: str, cfg: BenchConfig, n_ctx: int, logits_all: bool, n_gpu_layers: int) -> Any:
    """llama_cpp.Llama, with a failed allocation turned into OutOfMemory (an `oom` row)."""
    engine = cfg.engine
    options: dict[str, Any] = {"split_mode": split_mode(cfg), "main_gpu": 0}
    if engine.n_batch is not None:
        options["n_batch"] = engine.n_batch
    if engine.n_ubatch is not None:
        options["n_ubatch"] = engine.n_ubatch
    if engine.flash_attention() is not None:
        options["flash_attn"] = engine.flash_attention()
    if engine.kv_cache is not None:
        options["type_k"], options["type_v"] = ggml_types(engine.kv_cache_pair())
    threads = cpu_threads(cfg)
    _LOG.clear()
    _LOADED.clear()
    try:
        with _model_params(use_extra_bufts=repack(cfg)):
            return llama_cpp.Llama(model_path=path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
                                   n_threads=threads, n_threads_batch=threads, seed=cfg.seed,
                                   logits_all=logits_all, verbose=True, **options)
    except (ValueError, RuntimeError) as exc:
        hits = [line.strip() for line in _LOG
                if any(marker in line.lower() for marker in _OOM_MARKERS)]
        if hits:
            raise OutOfMemory(f"llama.cpp: {hits[-1][:300]}") from exc
        raise


def _workload_tokens(cfg: BenchConfig) -> int:
    """Tokens the speed context holds: the workload's, after the deepest depth asked."""
    return (max(cfg.workload.depths or [0]) + cfg.workload.prompt_tokens
            + cfg.workload.new_tokens)


class LlamaCppLoaded(LoadedModel):
    """A GGUF model opened in this process: the speed context (exactly the workload's
    tokens) or the evaluation context (every position's logits), one at a time."""

    def __init__(self, llm: Any, file: GgufFile, cfg: BenchConfig, n_gpu_layers: int,
                 on_gpu: bool) -> None:
        self._llm: Optional[Any] = llm
        self._eval: Optional[Any] = None
        self._cfg = cfg
        self._path = str(file.path)
        self._n_gpu_layers = n_gpu_layers
        self._n_vocab = llm.n_vocab()
        self._n_batch = llm.n_batch
        self._one = (llama_cpp.llama_token * 1)()
        self._one_batch = llama_cpp.llama_batch_get_one(self._one, 1)
        self._size = int(llama_cpp.llama_model_size(llm.model))
        log = "".join(_LOADED)
        self._buffers = device_buffers(log) if on_gpu else None
        self._kv_cache = kv_cache_facts(log, cfg)  # the speed context's cache
        layers = int(llama_cpp.llama_model_n_layer(llm.model))
        # layers left in host RAM by a GPU cell (repeating layers + the output); a CPU cell
        # has no GPU to offload from
        self.offloaded = on_gpu and 0 <= n_gpu_layers < layers + 1
        self.hf_id = cfg.model.hf_id
        self.revision = file.path.parent.name
        self.weights_origin = file.origin
        needed = _workload_tokens(cfg)
        placement = ("CPU" if n_gpu_layers == 0 else f"{min(n_gpu_layers, layers + 1)} of "
                     f"{layers + 1} layers on the GPU" if n_gpu_layers >= 0 else "all on the GPU")
        packing = ("repack on" if repack(cfg) else "repack off" + (
            " (llama.cpp's AMX kernels crash: llama.cpp issue 20824)"
            if cfg.engine.repack is None else ""))
        self.note = (f"llama.cpp {file.path.name} ({llama_cpp_version()}): n_ctx "
                     f"{llama_cpp.llama_n_ctx(llm.ctx)} for {needed} tokens, {placement}, "
                     f"{cpu_threads(cfg)} threads, {packing}{kv_words(cfg)}")

    def weights_bytes(self) -> int:
        return self._size

    def facts(self) -> dict[str, Any]:
        """What the file really holds: its type, bits per weight, tensor types by share."""
        from bench.engines.llamacpp.contents import read_contents

        return {**read_contents(Path(self._path)).facts(), **self._kv_cache}

    def device_buffers_bytes(self) -> Optional[int]:
        return self._buffers

    def _decode(self, tokens: Sequence[int]) -> None:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        self._check(llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(
            array, len(tokens))))

    @staticmethod
    def _check(code: int) -> None:
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} (1: no room in the KV cache)")

    @property
    def _ctx(self) -> Any:
        """The speed context (reopened when the evaluation one was opened since)."""
        if self._llm is None:
            if self._eval is not None:
                self._eval.close()
                self._eval = None
            self._llm = _open(self._path, self._cfg, _workload_tokens(self._cfg), False,
                              self._n_gpu_layers)
        return self._llm.ctx

    def _argmax(self) -> int:
        logits = llama_cpp.llama_get_logits_ith(self._ctx, -1)  # synchronizes the device
        return int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())

    def generate(self, prompt: np.ndarray, new_tokens: int) -> GenerationTiming:
        return self.generate_at_depth(prompt[:, :0], prompt, new_tokens)

    def generate_at_depth(self, prefix: np.ndarray, prompt: np.ndarray,
                          new_tokens: int) -> GenerationTiming:
        tokens = [int(t) for t in prompt[0]]
        ctx = self._ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        depth = [int(t) for t in prefix[0]]
        for i in range(0, len(depth), self._n_batch):  # untimed, outside the counters
            self._decode(depth[i:i + self._n_batch])
        if depth:  # llama.cpp counts queued tokens when it synchronizes: count these now
            llama_cpp.llama_synchronize(ctx)
        llama_cpp.llama_perf_context_reset(ctx)
        start = time.perf_counter()
        for i in range(0, len(tokens), self._n_batch):
            self._decode(tokens[i:i + self._n_batch])
        token = self._argmax()
        stamps = [time.perf_counter()]
        for _ in range(new_tokens - 1):
            self._one[0] = token
            self._check(llama_cpp.llama_decode(ctx, self._one_batch))
            token = self._argmax()
            stamps.append(time.perf_counter())
        perf = llama_cpp.llama_perf_context(ctx)
        return GenerationTiming(
            ttft_s=stamps[0] - start, decode_s=stamps[-1] - stamps[0],
            token_intervals_s=tuple(np.diff(stamps).tolist()),
            engine_prefill_s=perf.t_p_eval_ms / 1e3, engine_prefill_tokens=int(perf.n_p_eval),
            engine_decode_s=perf.t_eval_ms / 1e3, engine_decode_tokens=int(perf.n_eval))

    def _eval_llm(self) -> Any:
        """The evaluation context (every position's logits); the speed one is closed first."""
        if self._eval is None:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
            n_ctx = min(self._cfg.model.arch.max_position_embeddings, EVAL_CONTEXT)
            self._eval = _open(self._path, self._cfg, n_ctx, True, self._n_gpu_layers)
        return self._eval

    def lm(self, batch_size: int) -> Any:
        return LlamaCppLM(self._eval_llm(), batch_size)

    def logprobs(self, token_ids: Sequence[int], last: Optional[int] = None) -> np.ndarray:
        rows = LlamaCppLM(self._eval_llm(), 1).logits(token_ids)
        return log_softmax(rows[-last:] if last else rows)

    def close(self) -> None:
        for llm in (self._llm, self._eval):
            if llm is not None:
                llm.close()
        self._llm = self._eval = None


class LlamaCppEngine(Engine):
    capabilities = CAPABILITIES

    def resolve_device(self, requested: str) -> Device:
        cuda = _cuda_visible()
        if requested == "cuda" and not cuda:
            raise SkipCell("needs CUDA: cell.device=cuda but llama-cpp-python has no GPU "
                           "offload here (a CPU build, or no CUDA device visible)")
        return Device("cuda", 0) if cuda and requested != "cpu" else Device("cpu")

    def start_device(self, cfg: BenchConfig, device: Device) -> DeviceInfo:
        """llama.cpp cannot cap its allocations: the card's own capacity (no emulation)."""
        return card_device_info(cfg, device)

    def prepare(self, cfg: BenchConfig) -> dict[str, Any]:
        """Convert and quantize (cached); a quantization made now is the row's quantize_s."""
        made = ensure_file(cfg, cpu_threads(cfg))
        return {"quantize_s": made.quantize_s} if made.quantize_s is not None else {}

    def load(self, cfg: BenchConfig, device: Device, budget: Optional[OffloadBudget],
             for_eval: bool) -> LoadedModel:
        file = prepared_file(cfg)
        if device.type == "cuda":
            n_gpu_layers = -1 if cfg.engine.n_gpu_layers is None else cfg.engine.n_gpu_layers
        else:
            n_gpu_layers = 0
        llm = _open(str(file.path), cfg, _workload_tokens(cfg), False, n_gpu_layers)
        return LlamaCppLoaded(llm, file, cfg, n_gpu_layers, on_gpu=device.type == "cuda")

    def is_oom(self, exc: BaseException) -> bool:
        return super().is_oom(exc) or any(m in str(exc).lower() for m in _OOM_MARKERS)

    def versions(self) -> dict[str, Optional[str]]:
        return {**super().versions(), "engine_build": llama_cpp.llama_print_system_info()
                .decode(errors="replace").strip()[:500]}


ENGINE = LlamaCppEngine()
