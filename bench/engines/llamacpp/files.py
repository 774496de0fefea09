"""The GGUF file a llama.cpp cell runs, made once and cached.

A scheme starts from the model's source weights, the same ones its transformers schemes load:
they are converted once to a base GGUF in their own precision (F32 / F16 / BF16), and
llama.cpp's own quantizer (llama_model_quantize) writes each scheme's type from that base, as
`llama-quantize` does. Real checkpoints are converted by llama.cpp's convert_hf_to_gguf.py
(the converter of the same llama.cpp version, installed by `make`); the tiny model and
synthetic weights by bench's own writer (bench.engines.llamacpp.writer). Or a published
.gguf file of the scheme's type (quant.prequantized) is measured as it is.

Cache: ``<cache>/gguf/<model>-<digest>/`` holding ``base-<TYPE>.gguf`` and ``<TYPE>.gguf``,
each with a ``.json`` sidecar (when, how long, from what, with which versions); the digest
keys the source weights (hub commit, checkpoint contents, or synthetic facts and seed), the
llama-cpp-python version (which pins llama.cpp) and the writer's version. The conversion runs
in the cell's untimed "prepare" process; the measuring process only opens the file.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.core.atomic import staged_file, write_text
from bench.core.config import BenchConfig, QuantConfig
from bench.core.errors import SkipCell
from bench.core.paths import under
from bench.core.provenance import package_version
from bench.weights import checkpoint_identity, checkpoint_path, recall, remember

CACHE_FORMAT = 1
_FLOAT_TYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_CONVERTER_ENV = "BENCH_LLAMACPP_CONVERTER"
_CONVERTER_HOME = Path(sys.prefix) / "share" / "llama.cpp"  # <version>/convert_hf_to_gguf.py


@dataclass(frozen=True)
class GgufFile:
    """The file a cell opens, where it came from, and what making it cost now."""

    path: Path
    origin: str  # the weights_origin column
    quantize_s: Optional[float] = None  # llama.cpp's quantizer, when it ran for this cell


def target_type(quant: QuantConfig) -> str:
    """The GGUF type of a scheme: its gguf_type, or fp32 / fp16 / bf16 as F32 / F16 / BF16."""
    return quant.gguf_type if quant.method == "gguf" else _FLOAT_TYPES[quant.dtype]


def llama_cpp_version() -> str:
    return package_version("llama-cpp-python") or "not installed"


def _prequantized(cfg: BenchConfig) -> Optional[str]:
    return cfg.quant.prequantized.get(cfg.model.name) if cfg.quant.method == "gguf" else None


def _source_identity(cfg: BenchConfig) -> dict[str, Any]:
    from bench.engines.llamacpp.writer import SYNTHETIC_VOCAB_VERSION, WRITER_VERSION

    if cfg.resolved_weights == "synthetic":
        return {"synthetic": dataclasses.asdict(cfg.model.arch), "seed": cfg.seed,
                "writer": WRITER_VERSION, "vocab": SYNTHETIC_VOCAB_VERSION}
    return {**checkpoint_identity(cfg), "writer": WRITER_VERSION}


def _entry_dir(cfg: BenchConfig, source: dict[str, Any]) -> Path:
    key = json.dumps({"source": source, "llama_cpp_python": llama_cpp_version(),
                      "format": CACHE_FORMAT}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return under(cfg.resolved_cache_dir, "gguf", f"{cfg.model.name}-{digest}")


def _pointer_parts(cfg: BenchConfig) -> dict[str, Any]:
    """What the file the prepare step resolved depends on, beside the model's weights."""
    return {"type": target_type(cfg.quant), "prequantized": _prequantized(cfg),
            "llama_cpp_python": llama_cpp_version(), "format": CACHE_FORMAT}


def _resolved_in_prepare(cfg: BenchConfig) -> bool:
    """A published file (downloaded, its type checked) or real weights (the hub commit, the
    checkpoint's contents) are resolved by every cell's prepare step, which leaves a pointer."""
    return _prequantized(cfg) is not None or cfg.resolved_weights == "real"


def ready_file(cfg: BenchConfig) -> Optional[Path]:
    """The cell's file when it exists already and finding it builds nothing (parent side)."""
    if _resolved_in_prepare(cfg):
        return None
    if cfg.resolved_weights == "tiny":
        from bench.weights.tiny_cache import is_built

        if not is_built(cfg.model, cfg.resolved_cache_dir):
            return None  # finding it would build it
    path = _entry_dir(cfg, _source_identity(cfg)) / f"{target_type(cfg.quant)}.gguf"
    return path if path.is_file() else None


# --- published files --------------------------------------------------------------------------


def file_type_of(path: Path) -> str:
    """The GGUF's own file type (general.file_type), as llama.cpp names it: Q4_K_M, F16, ..."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.get_field(gguf.Keys.General.FILE_TYPE)
    if field is None:
        return "unknown"
    name = gguf.LlamaFileType(int(field.contents())).name
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _published(cfg: BenchConfig, spec: str) -> GgufFile:
    """A published .gguf: a local path, or hub_repo[@revision]:file.gguf (downloaded once)."""
    if Path(spec).is_file():
        path = Path(spec)
    else:
        repo, sep, filename = spec.partition(":")
        if not sep or not filename.endswith(".gguf"):
            raise ValueError(f"quant.prequantized.{cfg.model.name}={spec!r} is neither a local "
                             f".gguf file nor hub_repo[@revision]:file.gguf")
        from huggingface_hub import hf_hub_download

        repo_id, _, revision = repo.partition("@")
        path = Path(hf_hub_download(repo_id, filename, revision=revision or None,
                                    token=os.environ.get("HF_TOKEN") or None))
    found = file_type_of(path)
    if found != cfg.quant.gguf_type:
        raise ValueError(f"{spec} is a {found} file, not {cfg.quant.gguf_type} "
                         f"(quant={cfg.quant.name}): the row would mislabel it")
    return GgufFile(path, f"published {spec} ({found}, measured as it is)")


# --- conversion and quantization --------------------------------------------------------------


def _checkpoint_dtype(directory: Path) -> str:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float16")
    return _FLOAT_TYPES.get(dtype, "F16")


def converter_script() -> Path:
    """llama.cpp's convert_hf_to_gguf.py of the installed llama-cpp-python version."""
    path = Path(os.environ.get(_CONVERTER_ENV)
                or _CONVERTER_HOME / llama_cpp_version() / "convert_hf_to_gguf.py")
    if not path.is_file():
        raise SkipCell(f"converting a transformers checkpoint to GGUF needs llama.cpp's "
                       f"convert_hf_to_gguf.py, not found at {path}: `make llamacpp` installs "
                       f"it (or set {_CONVERTER_ENV})")
    return path


def _local_checkpoint(cfg: BenchConfig) -> Path:
    source = checkpoint_path(cfg)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, revision=cfg.model.revision,
                                  token=os.environ.get("HF_TOKEN") or None,
                                  allow_patterns=["*.json", "*.safetensors", "*.model",
                                                  "*.tiktoken", "*.txt"]))


def _convert_checkpoint(directory: Path, out: Path, base: str, log: Path) -> None:
    """llama.cpp's own converter, in a process of its own (it holds tensors while writing)."""
    script = converter_script()
    with staged_file(out) as tmp, open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, str(script), str(directory), "--outfile",
                               str(tmp), "--outtype", base.lower()], stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"convert_hf_to_gguf.py failed (exit {proc.returncode}, log "
                               f"{log}): {tail[0][:300]}")


def _write_base(cfg: BenchConfig, out: Path, base: str) -> str:
    """Write the base GGUF; returns how (for the origin text)."""
    from bench.engines.llamacpp import writer

    arch = cfg.model.arch
    if cfg.resolved_weights == "synthetic":
        with staged_file(out) as tmp:
            writer.write_llama_gguf(tmp, arch, list(writer.synthetic_llama_tensors(arch, cfg.seed)),
                                    writer.synthetic_vocab(arch.vocab_size), base, cfg.model.name)
        return f"synthetic weights (seed {cfg.seed}) written by bench as {base} GGUF"
    if cfg.resolved_weights == "packaged":
        from bench.weights.packaged import describe, packaged_file

        with staged_file(out) as tmp:
            writer.dequantized_copy(packaged_file(cfg.model, cfg.resolved_cache_dir), tmp)
        return f"{describe(cfg.model)}, dequantized to F32 GGUF by bench"
    directory = _local_checkpoint(cfg)
    if cfg.resolved_weights == "tiny":
        with staged_file(out) as tmp:
            writer.write_llama_gguf(tmp, arch, list(writer.checkpoint_tensors(directory)),
                                    writer.vocab_from_tokenizer_json(
                                        directory / "tokenizer.json", arch.vocab_size),
                                    base, cfg.model.name)
        return f"tiny checkpoint {directory.name} written by bench as {base} GGUF"
    _convert_checkpoint(directory, out, base, out.with_suffix(".log"))
    return f"{cfg.model.hf_id} converted by llama.cpp's convert_hf_to_gguf.py to {base} GGUF"


def _base_type(cfg: BenchConfig, target: str) -> str:
    """The precision the source is converted to: the checkpoint's own (synthetic: the
    target's when it is a float type, else F16)."""
    if cfg.resolved_weights == "synthetic":
        return target if target in _FLOAT_TYPES.values() else "F16"
    if cfg.resolved_weights == "packaged":
        return "F32"  # dequantized values are exact in F32
    return _checkpoint_dtype(_local_checkpoint(cfg))


def quantize_file(base: Path, out: Path, gguf_type: str, threads: int) -> float:
    """llama.cpp's own quantizer (what `llama-quantize` runs); returns its seconds."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = (llama_cpp.LLAMA_FTYPE_ALL_F32 if gguf_type == "F32"
                    else getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type}"))
    params.nthread = threads
    with staged_file(out) as tmp:
        start = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(str(base).encode(), str(tmp).encode(),
                                            ctypes.byref(params))
        seconds = time.perf_counter() - start
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize to {gguf_type} failed (code {rc})")
    return seconds


def _sidecar(path: Path, **fields: Any) -> None:
    write_text(path.with_name(path.name + ".json"), json.dumps(
        {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
         "llama_cpp_python": llama_cpp_version(), **fields}, indent=1, default=str) + "\n")


def _origin(path: Path) -> Optional[str]:
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return None
    return str(json.loads(sidecar.read_text(encoding="utf-8")).get("origin"))


def prepared_file(cfg: BenchConfig) -> GgufFile:
    """The measuring process's file: found without building or resolving anything."""
    if _resolved_in_prepare(cfg):
        pointer = recall(cfg, "gguf", _pointer_parts(cfg)) or {}
        path, origin = Path(pointer.get("path", "")), pointer.get("origin")
    else:
        path = ready_file(cfg) or Path("")
        origin = _origin(path) if path.is_file() else None
    if not path.is_file():
        raise RuntimeError("no GGUF file for this cell: its prepare step did not make one")
    return GgufFile(path, origin or str(path))


def ensure_file(cfg: BenchConfig, threads: int) -> GgufFile:
    """The cell's GGUF from the cache, else converted and quantized now; the pointer the
    measuring process reads is left beside the cache."""
    made = _ensure(cfg, threads)
    remember(cfg, "gguf", _pointer_parts(cfg), {"path": str(made.path), "origin": made.origin})
    return made


def _ensure(cfg: BenchConfig, threads: int) -> GgufFile:
    spec = _prequantized(cfg)
    if spec is not None:
        return _published(cfg, spec)
    source = _source_identity(cfg)
    entry = _entry_dir(cfg, source)
    target = target_type(cfg.quant)
    path = entry / f"{target}.gguf"
    if path.is_file():
        return GgufFile(path, _origin(path) or str(path))
    base_type = _base_type(cfg, target)
    base = entry / f"base-{base_type}.gguf"
    if not base.is_file():
        start = time.perf_counter()
        how = _write_base(cfg, base, base_type)
        _sidecar(base, origin=how, seconds=time.perf_counter() - start, source=source)
    how = _origin(base) or str(base)
    if target == base_type:
        origin = f"{how}; measured as {target}"
        _link(base, path)
        _sidecar(path, origin=origin, source=source)
        return GgufFile(path, origin)
    seconds = quantize_file(base, path, target, threads)
    origin = f"{how}; quantized to {target} by llama.cpp (llama-cpp-python {llama_cpp_version()})"
    _sidecar(path, origin=origin, seconds=seconds, source=source)
    return GgufFile(path, origin, quantize_s=seconds)


def _link(base: Path, path: Path) -> None:
    """The base already is the scheme's type: link it rather than write it twice."""
    with staged_file(path) as tmp:
        os.link(base, tmp)
