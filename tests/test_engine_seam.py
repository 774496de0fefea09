"""Adding an engine touches its own package and its conf file, nothing else: a test-only
engine, installed as a plugin (an entry point in the `bench.engines` group) with a conf file
of its own, runs a real cell, its settings checked by its own dataclass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, REPO

INIT = '''
"""A test-only engine: a fixed random bigram table over the tiny model's vocabulary."""
from dataclasses import dataclass

from bench.engines.base import Capabilities, EngineSettings
from bench.core.errors import BenchInputError

CAPABILITIES = Capabilities(
    name="echo", quant_methods=("none",), default_for=(), devices=("cpu",),
    weights=("tiny", "synthetic"), token_clock=True, allocator_peaks=False, offload=False,
    compile=False, max_batch_size=1, synthetic_model_types=None, kv_cache_dtype=None,
    distribution="numpy")


@dataclass
class EchoSettings(EngineSettings):
    name: str = "echo"
    temperature_scale: float = 1.0

    def validate(self, cfg) -> None:
        if self.temperature_scale <= 0:
            raise BenchInputError("engine.temperature_scale must be > 0 (echo's own rule)")


SETTINGS = EchoSettings


def needs_preparing(cfg) -> bool:
    return False
'''

ENGINE = '''
import time

import numpy as np

from bench.engines.base import Device, DeviceInfo, Engine, GenerationTiming, LoadedModel
from echo_engine import CAPABILITIES


class EchoLoaded(LoadedModel):
    def __init__(self, vocab: int, seed: int, scale: float) -> None:
        self.table = np.random.default_rng(seed).normal(size=(vocab, vocab)) * scale

    def weights_bytes(self) -> int:
        return int(self.table.nbytes)

    def generate(self, prompt, new_tokens):
        token = int(prompt[0][-1])
        start = time.perf_counter()
        stamps = []
        for _ in range(new_tokens):
            token = int(self.table[token].argmax())
            stamps.append(time.perf_counter())
        return GenerationTiming(ttft_s=stamps[0] - start, decode_s=stamps[-1] - stamps[0],
                                token_intervals_s=tuple(np.diff(stamps).tolist()))

    def lm(self, batch_size):
        raise NotImplementedError

    def logprobs(self, token_ids, last=None):
        rows = self.table[list(token_ids)]
        rows = rows - rows.max(axis=1, keepdims=True)
        out = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return out[-last:] if last else out


class EchoEngine(Engine):
    capabilities = CAPABILITIES

    def resolve_device(self, requested):
        return Device("cpu")

    def start_device(self, cfg, device):
        raise AssertionError("CPU only")

    def load(self, cfg, device, budget, for_eval):
        return EchoLoaded(cfg.model.arch.vocab_size, cfg.seed, cfg.engine.temperature_scale)


ENGINE = EchoEngine()
'''


def install_engine(tmp: Path, name: str, init: str, engine: str,
                   settings: str = "") -> tuple[Path, Path]:
    """An engine package `<name>_engine` with its entry point (in a site directory), and a
    conf dir with its conf file: what a third party's engine is."""
    site, package = tmp / "site", f"{name}_engine"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(init)
    (site / package / "engine.py").write_text(engine)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-engine\n"
                                   f"Version: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bench.engines]\n{name} = {package}\n")
    conf = tmp / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "engine" / f"{name}.yaml").write_text(
        f"defaults:\n  - {name}_settings\n  - _self_\n\nname: {name}\n{settings}")
    return site, conf


def plugin_env(site: Path, conf: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_CONF_DIR": str(conf), "BENCH_CACHE": str(cache),
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def _bench(tmp: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    site, conf = (install_engine(tmp, "echo", INIT, ENGINE, "temperature_scale: 1.0\n")
                  if not (tmp / "site").exists() else (tmp / "site", tmp / "conf"))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp,
                          env=plugin_env(site, conf, cache), capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_plugin_engine_runs_a_cell_with_its_own_settings(tmp_path: Path,
                                                           cache_dir: Path) -> None:
    results = tmp_path / "results"
    proc = _bench(tmp_path, cache_dir, "model=tiny-llama", "engine=echo", "quant=fp32",
                  "eval=none", "engine.temperature_scale=2.0", *FAST,
                  f"results_dir={results}", "report=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = pd.read_parquet(results).iloc[0]
    assert row.status == "ok", row.error
    assert row.engine == "echo" and row.decode_tok_s > 0
    assert row.weights_bytes == 2048 * 2048 * 8  # the tiny model's vocabulary, squared
    assert "temperature_scale: 2.0" in row.config_yaml
    bad = _bench(tmp_path, cache_dir, "model=tiny-llama", "engine=echo", "quant=fp32",
                 "eval=none", "engine.temperature_scale=0", "dry_run=true")
    assert bad.returncode == 2 and "echo's own rule" in bad.stderr
    other = _bench(tmp_path, cache_dir, "model=tiny-llama", "engine=hf", "quant=fp32",
                   "eval=none", "engine.temperature_scale=2", "dry_run=true")
    assert other.returncode == 2
    assert "not a setting of engine=hf (only of: echo)" in other.stderr
    refused = _bench(tmp_path, cache_dir, "model=tiny-llama", "engine=echo", "quant=bnb-nf4",
                     "eval=none", "dry_run=true")
    assert refused.returncode == 2 and "engine=echo cannot run quant=bnb-nf4" in refused.stderr


def test_config_holds_no_engines_facts() -> None:
    """config.py composes: no engine name, server, kernel list, GGUF type table or engine
    field table is spelled in it (each lives in its engine's package)."""
    import ast

    from bench.engines import engines

    tree = ast.parse((REPO / "bench" / "core" / "config.py").read_text(encoding="utf-8"))
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                and isinstance(n.value, str)}
    names = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}
    facts = {*engines(), "vllm", "llama_cpp", "Q4_K_M", "gptq_marlin"}
    assert not literals & facts, literals & facts
    assert not names & {"GGUF_TYPES", "GPTQ_KERNELS", "AWQ_KERNELS", "SERVERS",
                        "ENGINE_NAMES", "_ENGINE_FIELDS", "SERVER_APIS"}
