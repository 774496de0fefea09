"""GPTQ and AWQ through gptqmodel (the maintained successor of auto-gptq, which no longer
imports with transformers 5): a pre-quantized checkpoint, or one bench calibrates itself.

A self-calibrated checkpoint is cached on disk under ``<cache>/quantized/``, keyed by the
source weights (hub commit, local directory contents, or synthetic architecture and seed)
and every setting that changes the quantized bytes, so the next night's sweep loads it
instead of calibrating again. Calibration runs in its own process (``python -m bench.engines.hf.gptq
JOB``): the cell's process only ever holds the quantized model, so its memory peaks (host,
CUDA allocator, NVML) are those of the model being measured, not of the calibration.

gptqmodel is imported only here, and only in gptq/awq cells: on import it sets
PYTORCH_ALLOC_CONF and CUDA_DEVICE_ORDER for the whole process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from bench.core.atomic import staged_dir
from bench.core.config import BenchConfig, QuantConfig
from bench.core.errors import SkipCell
from bench.core.paths import under
from bench.core.process import child_env, die_with_parent
from bench.engines.hf.loading import HfModel
from bench.engines.hf.quant import torch_dtype
from bench.weights import checkpoint_identity, checkpoint_path, download

CACHE_FORMAT = 1
META_FILE = "bench-quant.json"
LOG_FILE = "quantize.log"


def import_gptqmodel() -> Any:
    """Import gptqmodel without letting its environment changes leak into processes this
    one starts later (CUDA is already initialised in a measuring cell, so they cannot
    change its allocator)."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(12, os.cpu_count() or 1)))
    saved = {k: os.environ.get(k) for k in ("PYTORCH_ALLOC_CONF", "CUDA_DEVICE_ORDER")}
    import gptqmodel

    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    logging.getLogger("logbar").setLevel(logging.WARNING)
    return gptqmodel


# --- cache key -----------------------------------------------------------------------------


def source_identity(cfg: BenchConfig) -> dict[str, Any]:
    """What the unquantized weights are, precisely enough to key the cache."""
    weights = cfg.resolved_weights
    if weights == "synthetic":
        from bench.weights.random_weights import INIT_STD

        return {"synthetic": dataclasses.asdict(cfg.model.arch), "seed": cfg.seed,
                "init_std": INIT_STD}
    return checkpoint_identity(cfg)


def quant_settings(quant: QuantConfig, weights: str) -> dict[str, Any]:
    """Every setting that changes the quantized bytes (the kernel does not: it only
    chooses how the same checkpoint is run)."""
    from bench.engines.hf.calibration import resolve_dataset

    return {"method": quant.method, "bits": quant.bits, "group_size": quant.group_size,
            "desc_act": quant.desc_act, "sym": quant.sym, "dtype": quant.dtype,
            "calibration": [resolve_dataset(quant, weights), quant.calibration_samples,
                            quant.calibration_seq_len],
            "gptqmodel": _gptqmodel_version(), "format": CACHE_FORMAT}


def _gptqmodel_version() -> str:
    from importlib.metadata import version

    return version("gptqmodel")


def cache_entry(cfg: BenchConfig) -> tuple[Path, dict[str, Any]]:
    """The cache directory of the cell's quantized checkpoint, and the source identity."""
    source = source_identity(cfg)
    key = json.dumps({"source": source, "quant": quant_settings(cfg.quant, cfg.resolved_weights)},
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = f"{cfg.model.name}-{cfg.quant.name}-{digest}"
    return under(cfg.resolved_cache_dir, "quantized", name), source


# --- calibration (runs in its own process) -------------------------------------------------


def _gptqmodel_config(gm: Any, quant: QuantConfig, offload_dir: Path) -> Any:
    if quant.method == "awq":
        return gm.AWQConfig(bits=quant.bits, group_size=quant.group_size,
                            offload_to_disk_path=str(offload_dir))
    return gm.GPTQConfig(bits=quant.bits, group_size=quant.group_size, desc_act=quant.desc_act,
                         sym=quant.sym, offload_to_disk_path=str(offload_dir))


def _build_synthetic_source(cfg: BenchConfig, out: Path) -> str:
    """The synthetic architecture with random weights, saved as a checkpoint to calibrate."""
    from bench.engines.hf.loading import load_synthetic

    plain = QuantConfig(name="source", method="none", bits=32 if cfg.quant.dtype == "float32"
                        else 16, dtype=cfg.quant.dtype)
    model = load_synthetic(cfg.model.arch, plain, torch.device("cpu"), cfg.seed).model
    model.save_pretrained(out)
    del model
    gc.collect()
    _stub_tokenizer().save_pretrained(out)
    return str(out)


def _stub_tokenizer() -> Any:
    """gptqmodel's loader insists on a tokenizer; random-token calibration never uses it."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from bench.weights.tiny import SPECIAL_TOKENS

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def quantize_job(cfg: BenchConfig, device: str, out: Path) -> None:
    """Calibrate and quantize the cell's source model into `out` (the job process's body)."""
    from transformers import AutoTokenizer

    from bench.engines.hf.calibration import calibration_set, resolve_dataset

    gm = import_gptqmodel()
    quant, weights = cfg.quant, cfg.resolved_weights
    work = out.parent
    start = time.perf_counter()
    if weights == "synthetic":
        src, revision, tokenizer = _build_synthetic_source(cfg, work / "source"), None, None
    else:
        src = checkpoint_path(cfg)
        revision = None if Path(src).is_dir() else cfg.model.revision
        tokenizer = None
        if resolve_dataset(quant, weights) != "random":
            tokenizer = AutoTokenizer.from_pretrained(src, revision=revision,
                                                      token=os.environ.get("HF_TOKEN") or None)
    calibration = calibration_set(quant, weights, cfg.model.arch.vocab_size, tokenizer)
    kwargs = {"revision": revision} if revision else {}
    qmodel = gm.GPTQModel.load(src, _gptqmodel_config(gm, quant, work / "offload"),
                               device=device, dtype=torch_dtype(quant), **kwargs)
    # AWQ's default packing kernel is CUDA-only; its portable torch kernel packs on CPU.
    backend = "awq_torch" if quant.method == "awq" and device == "cpu" else "auto"
    quantize_start = time.perf_counter()
    qmodel.quantize(calibration, batch_size=1, backend=backend)
    quantize_s = time.perf_counter() - quantize_start
    qmodel.save(str(out))
    meta = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "gptqmodel_quantize_s": quantize_s, "job_s": time.perf_counter() - start,
            "device": device, "source": source_identity(cfg),
            "quant": quant_settings(quant, weights), "bench_quant": dataclasses.asdict(quant)}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))


def _check_synthetic_fits(cfg: BenchConfig, cache: Path) -> None:
    """Calibrating random weights needs the whole unquantized model in host RAM and on disk
    once; say so instead of being killed by the OOM killer halfway."""
    import psutil

    need = cfg.model.arch.params * torch_dtype(cfg.quant).itemsize
    ram = psutil.virtual_memory().available
    cache.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(cache).free
    if need * 1.5 > ram or need * 1.2 > disk:
        gib = 2**30
        raise SkipCell(f"{cfg.quant.method} on synthetic weights calibrates the {need / gib:.1f} "
                       f"GiB unquantized model once: needs {need * 1.5 / gib:.1f} GiB free host "
                       f"RAM and {need * 1.2 / gib:.1f} GiB disk, have {ram / gib:.1f} and "
                       f"{disk / gib:.1f}")


def run_quantize_job(cfg: BenchConfig, device: torch.device, target: Path) -> float:
    """Quantize into the cache in a child process; returns its wall time (the cell's
    quantize_s). Written to a staging directory and renamed: concurrent cells agree."""
    if cfg.resolved_weights == "synthetic":
        _check_synthetic_fits(cfg, target.parent)
    with staged_dir(target, META_FILE, product="model") as staging:
        job = staging / "job.pkl"
        job.write_bytes(pickle.dumps((cfg, str(device), staging / "model")))
        start = time.perf_counter()
        with open(staging / LOG_FILE, "wb") as log:
            # cwd: gptqmodel writes its own logs/ into the working directory
            proc = subprocess.run([sys.executable, "-m", "bench.engines.hf.gptq", str(job)],
                                  stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                  cwd=staging, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            kept = target.parent / f"{target.name}.failed.log"
            shutil.copy(staging / LOG_FILE, kept)
            raise RuntimeError(f"{cfg.quant.method} calibration failed (exit "
                               f"{proc.returncode}, log {kept}): "
                               f"{_last_error(staging / LOG_FILE)}")
        shutil.copy(staging / LOG_FILE, staging / "model" / LOG_FILE)
        meta_path = staging / "model" / META_FILE
        meta = json.loads(meta_path.read_text())
        meta["quantize_s"] = elapsed
        meta_path.write_text(json.dumps(meta, indent=1, default=str))
    return elapsed


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
    return (errors or lines or ["no output"])[-1][:300]


# --- loading -------------------------------------------------------------------------------


def _prequantized(cfg: BenchConfig) -> Optional[tuple[str, Optional[str]]]:
    """(hub id or directory, revision) of a published checkpoint for this model, if any."""
    spec = cfg.quant.prequantized.get(cfg.model.name)
    if spec is None or cfg.resolved_weights != "real":
        return None
    if Path(spec).is_dir():
        return spec, None
    repo, _, revision = spec.partition("@")
    return repo, revision or "main"


def _kernel_name(model: torch.nn.Module) -> str:
    for module in model.modules():
        if type(module).__module__.startswith("gptqmodel.nn_modules.qlinear"):
            return type(module).__name__
    return "none"


def ensure_quantized(cfg: BenchConfig, device: torch.device) -> Optional[float]:
    """The cell's quantized checkpoint on disk (the cell's prepare phase): the published one
    downloaded, or bench's own calibrated into the cache on a miss. Returns the calibration's
    seconds when it ran now, else None."""
    pre = _prequantized(cfg)
    if pre is not None:
        download(*pre)
        return None
    target, _ = cache_entry(cfg)
    if (target / META_FILE).exists():
        return None
    return run_quantize_job(cfg, device, target)


def load_gptq(cfg: BenchConfig, device: torch.device, with_tokenizer: bool) -> HfModel:
    """Load (calibrating first on a cache miss) a GPTQ/AWQ model with the scheme's kernel."""
    quant = cfg.quant
    gm = import_gptqmodel()
    quantize_s: Optional[float] = None
    revision: Optional[str]
    pre = _prequantized(cfg)
    if pre is not None:
        path, revision = pre
        note = f"pre-quantized checkpoint {path}" + (f"@{revision}" if revision else "")
        hf_id = path
    else:
        target, source = cache_entry(cfg)
        if (target / META_FILE).exists():
            meta = json.loads((target / META_FILE).read_text())
            note = (f"cache hit: {target} (calibrated {meta.get('created_at')} in "
                    f"{meta.get('quantize_s', 0):.1f} s)")
        else:
            quantize_s = run_quantize_job(cfg, device, target)
            note = f"calibrated into {target}"
        path = str(target)
        hf_id = cfg.model.hf_id
        revision = None
        # what was quantized: the hub commit, the local directory, or nothing (synthetic)
        source_revision = source.get("commit") or source.get("local")
    kwargs = {"revision": revision} if revision else {}
    qmodel = gm.GPTQModel.load(path, device=str(device), backend=quant.kernel,
                               dtype=torch_dtype(quant), **kwargs)
    model = qmodel.model
    model.eval()
    _settle(model, device)
    note += f"; kernel {_kernel_name(model)}"
    tokenizer = None
    if with_tokenizer and cfg.resolved_weights != "synthetic":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if pre is not None:
        revision = getattr(model.config, "_commit_hash", None) or revision
    else:
        revision = source_revision
    return HfModel(model=model, tokenizer=tokenizer, hf_id=hf_id, revision=revision,
                       quantize_s=quantize_s, note=note)


def _settle(model: torch.nn.Module, device: torch.device) -> None:
    """One 1-token forward: several gptqmodel kernels repack their weights on first use, and
    weights_bytes must see the layout that serves tokens. gptqmodel also flips the
    generation config to sampling; the measurement is greedy, so put that back."""
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.do_sample = False


if __name__ == "__main__":  # python -m bench.engines.hf.gptq JOB: the calibration process
    die_with_parent()
    job_cfg, job_device, job_out = pickle.loads(Path(sys.argv[1]).read_bytes())
    quantize_job(job_cfg, job_device, job_out)
