"""The conf/ data files the report reads: GPU classes, architecture facts, quant dtypes.

Read as plain YAML (no Hydra composition): the report only needs the facts, and a conf file
that later gains keys must not break the report. The typed dataclasses of bench.core.config
keep the meaning of each field.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.core import paths, sizes
from bench.core.config import ArchFacts, GpuConfig
from bench.core.sizes import DTYPE_BYTES
from bench.engines import capabilities, engines

MIB = 2**20
_VENDOR_WORDS = frozenset({"nvidia", "geforce", "gpu", "tesla"})


def _read_group(conf_dir: Path, group: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((conf_dir / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out[str(data.get("name", path.stem))] = data
    return out


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of `data` that are fields of the dataclass `cls` (a conf file that later
    gains keys still reads)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class GpuClass:
    """A GPU class with a capacity (``local`` has none and is not a column)."""

    name: str
    vram_mib: int
    bandwidth_gbs: Optional[float]
    source: str
    devices: tuple[str, ...] = ()  # device names of such cards, as CUDA and NVML give them

    @property
    def capacity_bytes(self) -> int:
        return self.vram_mib * MIB


@dataclass(frozen=True)
class HostClass:
    """A host-memory class (conf/host/): its RAM, and the share one model process may use."""

    name: str
    ram_mib: int
    usable_share: float
    source: str

    @property
    def ram_bytes(self) -> int:
        return self.ram_mib * MIB

    @property
    def capacity_bytes(self) -> int:
        return int(self.ram_bytes * self.usable_share)


@dataclass(frozen=True)
class ConfData:
    """Everything the report takes from conf/."""

    gpu_classes: tuple[GpuClass, ...]  # with a capacity, smallest first
    models: dict[str, ArchFacts]
    quant_dtypes: dict[str, str]
    conf_dir: Path
    host_classes: tuple[HostClass, ...] = ()  # smallest first
    model_tasks: dict[str, str] = dataclasses.field(default_factory=dict)  # every conf/model
    quant_bits: dict[str, int] = dataclasses.field(default_factory=dict)  # nominal, per scheme

    def gpu(self, name: Optional[str]) -> Optional[GpuClass]:
        return next((g for g in self.gpu_classes if g.name == name), None)


def load_conf(conf_dir: Optional[str | os.PathLike] = None) -> ConfData:
    """Read conf/gpu, conf/host, conf/model and conf/quant; a missing group is empty."""
    root = Path(conf_dir) if conf_dir is not None else paths.conf_dir()
    gpus = []
    for name, data in _read_group(root, "gpu").items():
        cfg = GpuConfig(**known_fields(GpuConfig, data))
        if cfg.vram_mib is not None:
            gpus.append(GpuClass(name, int(cfg.vram_mib),
                                 None if cfg.bandwidth_gbs is None else float(cfg.bandwidth_gbs),
                                 str(cfg.source or ""), tuple(cfg.devices or ())))
    model_group = _read_group(root, "model")
    models = {name: ArchFacts(**known_fields(ArchFacts, data.get("arch") or {}))
              for name, data in model_group.items() if data.get("arch")}
    tasks = {name: str(data.get("task") or "text-generation")
             for name, data in model_group.items()}
    quants = _read_group(root, "quant")
    dtypes = {name: str(data.get("dtype", "float32")) for name, data in quants.items()}
    bits = {name: int(data["bits"]) for name, data in quants.items() if data.get("bits")}
    hosts = [HostClass(name, int(data["ram_mib"]), float(data.get("usable_share", 1.0)),
                       " ".join(str(data.get("source", "")).split()))
             for name, data in _read_group(root, "host").items()]
    return ConfData(tuple(sorted(gpus, key=lambda g: (g.vram_mib, g.name))), models, dtypes,
                    root, tuple(sorted(hosts, key=lambda h: (h.ram_mib, h.name))), tasks, bits)


def kv_bytes_per_token(conf: ConfData, row: dict[str, Any]) -> Optional[int]:
    """Analytic KV cache per context token of a row's model, engine, scheme and batch
    (bench.core.sizes): kept in the engine's KV dtype (llama.cpp: float16), else the scheme's
    activation dtype (bnb quantizes weights only). None without a text model's facts (a
    diffusion pipeline's conf has only its params)."""
    arch = conf.models.get(str(row.get("model")))
    if arch is None or not arch.has_text_model:
        return None
    dtype = conf.quant_dtypes.get(str(row.get("quant")))
    engine = row.get("engine") or "hf"
    if engine in engines():
        dtype = capabilities(engine).kv_cache_dtype or dtype
    if arch is None or dtype not in DTYPE_BYTES or row.get("batch_size") is None:
        return None
    return sizes.kv_bytes_per_token(arch, dtype, int(row["batch_size"]))


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def match_device(conf: ConfData, device_name: Optional[str]) -> Optional[GpuClass]:
    """The GPU class a physical device is, when its name says so unambiguously.

    A class that lists the name among its `devices`; else one whose name plus card (the
    source up to its first ";", not its citations) holds every word of the device name,
    vendor words dropped: "NVIDIA A100-SXM4-40GB" -> a100-40gb, "NVIDIA L4" -> none.
    """
    if not device_name:
        return None
    listed = [g for g in conf.gpu_classes if _norm(device_name) in map(_norm, g.devices)]
    if listed:
        return listed[0] if len(listed) == 1 else None
    words = [w for w in re.split(r"[^a-z0-9]+", device_name.lower())
             if w and w not in _VENDOR_WORDS]
    if not words:
        return None
    hits = [g for g in conf.gpu_classes
            if all(w in _norm(f"{g.name} {g.source.split(';')[0]}") for w in words)]
    return hits[0] if len(hits) == 1 else None
