"""Model sources: a real checkpoint (hub id or local directory), the true architecture with
synthetic random weights (nothing downloaded), or the offline tiny model.

``real`` and ``tiny`` both go through ``from_pretrained`` with the scheme's
quantization_config (bnb, torchao), as a user's own code would; HQQ is applied with the hqq
library right after loading, and GPTQ/AWQ load a calibrated checkpoint (bench.gptq).
``synthetic`` builds the architecture on the meta device and materialises it one layer at a
time on the target device, quantizing each linear layer exactly as the load-time quantizer
does (bnb, torchao, hqq), so host RAM never holds the whole model and a 70B cell needs no
140 GB checkpoint.

``LoadedModel.quantize_s`` is the time of a quantization step separate from loading
(GPTQ/AWQ calibration, HQQ); ``load_model``'s total minus it is the load alone. Schemes that
quantize inside from_pretrained (bnb, torchao) report None: their load time includes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from bench.config import ArchFacts, BenchConfig, QuantConfig
from bench.memory import parameter_count
from bench.offload import (
    OffloadBudget,
    as_torch_device,
    device_of,
    dispatch,
    pinned,
    plan_device_map,
    pretrained_placement,
)
from bench.offload import describe as describe_offload
from bench.quant import (
    KEEP_UNQUANTIZED,
    check_runnable,
    hqq_linear,
    is_quantizable_linear,
    load_time_config,
    quantize_hqq_,
    quantize_torchao_,
    torch_dtype,
)
from bench.tiny import ensure_tiny_model

INIT_STD = 0.02  # the initializer_range of Llama-family configs


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Optional[Any]
    hf_id: Optional[str]
    revision: Optional[str]  # the commit actually loaded, when known
    quantize_s: Optional[float] = None  # quantization after load (calibration), when separate
    note: Optional[str] = None  # how the quantized weights came to be (cache hit, kernel, ...)


# The ArchFacts fields a transformers config takes, by their Llama names.
_COMMON_FACTS = ("num_hidden_layers", "hidden_size", "num_attention_heads",
                 "num_key_value_heads", "vocab_size", "intermediate_size",
                 "max_position_embeddings", "tie_word_embeddings", "rms_norm_eps", "rope_theta")
# model_type -> {common fact: its config's own keyword, or None where the architecture derives
# it from config_overrides (MPT: d_model * expansion_ratio; no grouped-query attention)}.
# Types not listed use the Llama names (llama, mixtral, phi3, granite, gemma3_text, ...).
_CONFIG_NAMES: dict[str, dict[str, Optional[str]]] = {
    "falcon": {"num_key_value_heads": "num_kv_heads", "intermediate_size": "ffn_hidden_size"},
    "gpt_neox": {"num_key_value_heads": None, "rope_theta": "rotary_emb_base"},
    "mpt": {"num_hidden_layers": "n_layers", "hidden_size": "d_model",
            "num_attention_heads": "n_heads", "max_position_embeddings": "max_seq_len",
            "num_key_value_heads": None, "intermediate_size": None},
}
# Image-text checkpoints whose common facts describe the nested text_config; the vision
# tower and projector come from config_overrides (vision_config, ...).
_TEXT_CONFIG_TYPES = frozenset({"gemma3"})


def hf_config(arch: ArchFacts) -> PretrainedConfig:
    """A transformers config with the model's true architecture: the common facts under the
    config class's own names (null facts left out), then config_overrides on top, as the
    checkpoint's config.json would give them."""
    names = _CONFIG_NAMES.get(arch.model_type, {})
    facts: dict[str, Any] = {}
    for fact in _COMMON_FACTS:
        key, value = names.get(fact, fact), getattr(arch, fact)
        if key is not None and value is not None:
            facts[key] = value
    overrides = dict(arch.config_overrides)
    if arch.model_type in _TEXT_CONFIG_TYPES:
        text = {**facts, **overrides.pop("text_config", {})}
        return AutoConfig.for_model(arch.model_type, text_config=text,
                                    tie_word_embeddings=arch.tie_word_embeddings, **overrides)
    return AutoConfig.for_model(arch.model_type, **{**facts, **overrides})


def meta_model(arch: ArchFacts) -> torch.nn.Module:
    """The architecture built on the meta device: shapes without memory."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config(arch))


def architecture_params(arch: ArchFacts) -> int:
    """Parameter count of the architecture (tied weights once)."""
    return parameter_count(meta_model(arch))


def load_pretrained(path: str, revision: Optional[str], quant: QuantConfig,
                    device: torch.device, with_tokenizer: bool,
                    budget: Optional[OffloadBudget] = None) -> LoadedModel:
    token = os.environ.get("HF_TOKEN") or None
    model = AutoModelForCausalLM.from_pretrained(
        path, revision=revision, token=token, dtype=torch_dtype(quant),
        quantization_config=load_time_config(quant, offload=budget is not None),
        **pretrained_placement(device, budget))
    model.eval()
    quantize_s = quantize_hqq_(model, quant, device) if quant.method == "hqq" else None
    tokenizer = (AutoTokenizer.from_pretrained(path, revision=revision, token=token)
                 if with_tokenizer else None)
    commit = getattr(model.config, "_commit_hash", None) or revision
    note = (describe_offload(model, getattr(model, "hf_device_map", None), budget)
            if budget is not None else None)
    return LoadedModel(model=model, tokenizer=tokenizer, hf_id=path, revision=commit,
                       quantize_s=quantize_s, note=note)


def _random_tensor(shape: torch.Size, dtype: torch.dtype, device: torch.device,
                   gen: torch.Generator) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    if device.type == "cpu":
        return out.normal_(0.0, INIT_STD, generator=gen)
    return out.normal_(0.0, INIT_STD)


def _materialize_bnb_weight(module: torch.nn.Module, dtype: torch.dtype,
                            device: torch.device, gen: torch.Generator) -> None:
    """Quantize a random weight the way transformers' bnb quantizer does at load time."""
    import bitsandbytes as bnb

    old = module.weight
    value = _random_tensor(old.shape, dtype, torch.device("cpu"), gen)
    kwargs = dict(old.__dict__)
    if isinstance(module, bnb.nn.Linear4bit):
        module.weight = bnb.nn.Params4bit(value, requires_grad=False, **kwargs).to(device)
    else:
        kwargs.pop("SCB", None)
        module.weight = bnb.nn.Int8Params(value, requires_grad=False, **kwargs).to(device)


def load_synthetic(arch: ArchFacts, quant: QuantConfig, device: torch.device,
                   seed: int, budget: Optional[OffloadBudget] = None) -> LoadedModel:
    """The true architecture with random weights, built layer by layer on the device; each
    Linear is quantized (bnb, torchao, hqq) as soon as its random weight exists. With an
    offload budget, modules go where from_pretrained(device_map="auto") would put them."""
    import accelerate

    if quant.method in ("gptq", "awq"):
        raise ValueError("gptq/awq synthetic weights are calibrated by bench.gptq")
    dtype = torch_dtype(quant)
    config = hf_config(arch)
    with accelerate.init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    bnb_config = (load_time_config(quant, offload=budget is not None)
                  if quant.method == "bnb" else None)
    if bnb_config is not None:
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear

        model = replace_with_bnb_linear(model, modules_to_not_convert=KEEP_UNQUANTIZED,
                                        quantization_config=bnb_config)
    device_map = (plan_device_map(model, bnb_config, device, budget)
                  if budget is not None else pinned(device))
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    quantize_s = 0.0 if quant.method == "hqq" else None
    for qualname, module in modules.items():
        target = as_torch_device(device_of(qualname, device_map))
        if bnb_config is not None and module.__class__.__module__.startswith("bitsandbytes"):
            _materialize_bnb_weight(module, dtype, target, gen)
        _materialize(module, dtype, target, gen)
        if not is_quantizable_linear(qualname, module):
            continue
        if quant.method == "torchao":  # in place, as TorchAoConfig does while loading
            quantize_torchao_(module, quant)
        elif quant.method == "hqq":  # a separate step, as after from_pretrained: timed
            start = time.perf_counter()
            parent, _, child = qualname.rpartition(".")
            setattr(modules[parent], child, hqq_linear(module, quant, device))
            quantize_s = (quantize_s or 0.0) + time.perf_counter() - start
    if config.tie_word_embeddings:
        model.tie_weights()
    note = None
    if budget is not None:
        dispatch(model, device_map, device)
        note = describe_offload(model, device_map, budget)
    model.eval()
    return LoadedModel(model=model, tokenizer=None, hf_id=None, revision=None,
                       quantize_s=quantize_s, note=note)


def _materialize(module: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                 gen: torch.Generator) -> None:
    """Random values (ones for norms) for the module's own parameters still on meta."""
    for name, param in list(module.named_parameters(recurse=False)):
        if param.device.type != "meta":
            continue
        if "norm" in type(module).__name__.lower():
            value = torch.ones(param.shape, dtype=dtype, device=device)
        else:
            value = _random_tensor(param.shape, dtype, device, gen)
        setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    for name, buf in list(module.named_buffers(recurse=False)):
        module._buffers[name] = buf.to(device)


def load_model(cfg: BenchConfig, device: torch.device, with_tokenizer: bool,
               budget: Optional[OffloadBudget] = None) -> LoadedModel:
    """The cell's model on `device` (beyond `budget` in host RAM, when offloading),
    quantized by its scheme; SkipCell where the scheme cannot run here (CUDA-only scheme,
    missing optional extra)."""
    check_runnable(cfg.quant, device)
    weights = cfg.resolved_weights
    if cfg.quant.method in ("gptq", "awq"):
        from bench.gptq import load_gptq  # imports gptqmodel: only in gptq/awq cells

        return load_gptq(cfg, device, with_tokenizer)
    if weights == "synthetic":
        loaded = load_synthetic(cfg.model.arch, cfg.quant, device, cfg.seed, budget)
        loaded.hf_id = cfg.model.hf_id
        return loaded
    if weights == "tiny":
        path = ensure_tiny_model(cfg.model, cfg.resolved_cache_dir)
        loaded = load_pretrained(str(path), None, cfg.quant, device, with_tokenizer, budget)
        loaded.revision = path.name
        return loaded
    assert cfg.model.hf_id is not None  # validated: weights=real needs hf_id
    return load_pretrained(cfg.model.hf_id, cfg.model.revision, cfg.quant, device,
                           with_tokenizer, budget)
