"""The conf/model entries: each builds its checkpoint's architecture, exactly.

No weights are downloaded: parameter counts come from the architecture built on the meta
device; that every architecture also loads, quantizes and generates is shown on a shrunk
copy of it (same model_type and architecture-specific settings, a few small layers) through
the real synthetic loading path on CPU.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.quantizers.base import get_keys_to_not_convert
from transformers.quantizers.quantizers_utils import should_convert_module

from bench.core.config import ArchFacts
from bench.engines.hf.loading import load_synthetic
from bench.engines.hf.quant import KEEP_UNQUANTIZED, is_quantizable_linear, quantized_params
from bench.report.claims import bench_model, load_claims, load_mapping
from bench.sweep.plan import choices, make_plan
from bench.weights.arch import hf_config, parameter_count
from tests.conftest import REPO, run_bench

CPU = torch.device("cpu")
# the language models (vision-language and diffusion models: test_vision_language.py and
# test_diffusion.py build theirs from the config files bench ships)
MODELS = sorted(m for m in choices("model") if yaml.safe_load(
    (REPO / "conf" / "model" / f"{m}.yaml").read_text()).get("task",
                                                            "text-generation") == "text-generation")
LLM_SEEDS = ("llama2-7b", "llama2-13b", "llama2-70b", "llama-30b", "llama31-70b",
             "llama31-405b", "falcon-7b", "falcon-40b", "mpt-7b", "gpt-neox-20b",
             "mixtral-8x7b", "phi3-mini-4k", "granite3-8b", "gemma3-4b")
VLM_SEEDS = ("blip2-opt-2.7b", "pix2struct-base", "kosmos-2", "llama32-11b-vision",
             "llama32-90b-vision", "pixtral-12b")
IMAGE_SEEDS = ("sd-1.5", "sd-2.1", "sdxl-base", "deepfloyd-if-xl", "svd-xt")
SEEDS = LLM_SEEDS + VLM_SEEDS + IMAGE_SEEDS
SEED_QUANTS = ("fp16", "bnb-int8", "bnb-nf4", "bnb-nf4-dq")


@lru_cache(maxsize=None)
def arch_of(name: str) -> ArchFacts:
    return make_plan([f"model={name}", "weights=synthetic"])[0].config.model.arch


@lru_cache(maxsize=None)
def meta_model(name: str) -> PreTrainedModel:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config(arch_of(name)))


@pytest.mark.parametrize("name", MODELS)
def test_architecture_has_the_published_parameter_count(name: str) -> None:
    assert parameter_count(meta_model(name)) == arch_of(name).params


@pytest.mark.parametrize("name", MODELS)
def test_output_layer_stays_unquantized_as_transformers_keeps_it(name: str) -> None:
    """bench's skip list (passed as llm_int8_skip_modules, which replaces transformers'
    default) keeps exactly the Linear layers transformers' own default would keep."""
    model = meta_model(name)
    modules = dict(model.named_modules())
    linears = {n for n, m in modules.items() if isinstance(m, torch.nn.Linear)}
    default = {k for k in get_keys_to_not_convert(model) if k in linears}
    default |= {n for n in linears if not should_convert_module(
        n, list(model._keep_in_fp32_modules or ()))}
    kept_by_bnb = {n for n in linears if not should_convert_module(n, KEEP_UNQUANTIZED)}
    kept_by_bench = {n for n in linears if not is_quantizable_linear(n, modules[n])}
    assert default == kept_by_bnb == kept_by_bench != set()


def test_common_facts_say_what_the_config_builds() -> None:
    """The record the report and the predictor read (layers, heads, KV heads, context) is
    what the translated config really holds."""
    for name in MODELS:
        arch = arch_of(name)
        text = hf_config(arch).get_text_config()
        kv = getattr(text, "num_key_value_heads", None) or getattr(text, "num_kv_heads", None)
        if getattr(text, "multi_query", False) and not getattr(
                text, "new_decoder_architecture", True):
            kv = 1  # FalconAttention's multi-query: one KV head whatever num_kv_heads says
        assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads,
                kv or text.num_attention_heads, text.vocab_size) == (
            arch.num_hidden_layers, arch.hidden_size, arch.num_attention_heads,
            arch.num_key_value_heads, arch.vocab_size), name


# --- shrunk copies through the synthetic loading path --------------------------------------

# Architectures whose Linear layers transformers 5.23's bitsandbytes integration leaves as
# they are (replace_with_bnb_linear converts `type(m) is nn.Linear` only): their bnb cells
# hold 16-bit weights, in bench as with real checkpoints. Pinned so a change is noticed.
BNB_UNCONVERTED = {"falcon": "FalconLinear subclasses nn.Linear"}

# Size settings of config_overrides that must shrink with the model (the rest are kept).
SHRINK: dict[str, dict[str, Any]] = {
    "gemma3": {"text_config": {"head_dim": 16, "query_pre_attn_scalar": 16},
               "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                                 "num_attention_heads": 2, "num_hidden_layers": 1,
                                 "image_size": 56, "patch_size": 14},
               "mm_tokens_per_image": 4},
}


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def shrunk(arch: ArchFacts) -> ArchFacts:
    """2 layers of width 64 (4 heads; multi-query, grouped or full KV as the original), the
    real vocabulary (special token ids stay valid) and every architecture-specific setting."""
    kv = arch.num_key_value_heads
    return dataclasses.replace(
        arch, num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
        num_key_value_heads=1 if kv == 1 else 4 if kv == arch.num_attention_heads else 2,
        intermediate_size=128,
        config_overrides=_merge(arch.config_overrides, SHRINK.get(arch.model_type, {})))


def _variants() -> list[str]:
    """One model per distinct architecture: model_type plus its own settings' names."""
    seen: dict[str, str] = {}
    for name in MODELS:
        arch = arch_of(name)
        key = json.dumps([arch.model_type, sorted(arch.config_overrides)])
        seen.setdefault(key, name)
    return sorted(seen.values())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Models this small run fastest on one thread, and do not slow down when the other
    core is busy (OpenMP workers waiting on each other dominate a 64-wide layer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("quant", ["fp32", "bnb-nf4"])
@pytest.mark.parametrize("name", _variants())
def test_shrunk_architecture_loads_synthetic_and_generates(name: str, quant: str) -> None:
    scheme = make_plan([f"quant={quant}"])[0].config.quant
    arch = shrunk(arch_of(name))
    model = load_synthetic(arch, scheme, CPU, seed=0).model
    modules = dict(model.named_modules())
    packed = [n for n, m in modules.items() if type(m).__module__.startswith("bitsandbytes")]
    assert bool(packed) == (quant == "bnb-nf4" and arch.model_type not in BNB_UNCONVERTED)
    assert type(modules["lm_head"]) is torch.nn.Linear
    # the row's quant_note reports this share: every converted layer, nothing else
    assert quantized_params(model) == sum(modules[n].in_features * modules[n].out_features
                                          for n in packed)
    prompt = torch.randint(0, 1000, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=4, min_new_tokens=4, do_sample=False,
                             pad_token_id=0)
    assert out.shape == (1, 12)


# --- the seeds sweep ------------------------------------------------------------------------


def test_every_claimed_checkpoint_maps_to_a_seed_model() -> None:
    conf = REPO / "conf"
    mapping = load_mapping(conf / "claims" / "mapping.yaml")
    for claim in load_claims(conf / "claims" / "published-claims.csv"):
        if not claim.hf_id_hint:
            continue
        model, _ = bench_model(claim, mapping, conf)
        assert model in SEEDS, (claim.source, claim.model)


def test_seeds_dry_run_lists_every_seed_model_by_every_scheme(tmp_path: Path,
                                                              cache_dir: Path) -> None:
    """Every model of the tables with a public checkpoint (LLMs, vision-language, diffusion),
    random weights by default, each on the engine of its task."""
    proc = run_bench("+sweep=seeds", "dry_run=true", cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"{len(SEEDS) * len(SEED_QUANTS)} cells")
    rows = [dict(t.split("=", 1) for t in line.split() if "=" in t) for line in lines[1:]]
    assert {(r["model"], r["quant"]) for r in rows} == {(m, q) for m in SEEDS
                                                       for q in SEED_QUANTS}
    assert all((r["weights"], r["eval"], r["batch"]) == ("synthetic", "none", "1")
               for r in rows)
    for r in rows:
        if r["model"] in IMAGE_SEEDS:
            assert r["engine"] == "diffusion" and "size" in r and "prompt" not in r
        else:
            assert r["engine"] == "hf" and (r["prompt"], r["new"]) == ("512", "128")
    assert not (tmp_path / "results").exists()
