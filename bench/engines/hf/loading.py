"""transformers' weight sources: a real checkpoint (hub id or local directory, the tiny
model's included) through ``from_pretrained``, or the true architecture with synthetic random
weights (nothing downloaded).

``real`` and ``tiny`` both go through ``from_pretrained`` with the scheme's
quantization_config (bnb, torchao), as a user's own code would; HQQ is applied with the hqq
library right after loading (GPTQ/AWQ: bench.engines.hf.gptq). ``synthetic`` builds the
architecture on the meta device and materialises it one layer at a time on the target
device, quantizing each linear layer exactly as the load-time quantizer does (bnb, torchao,
hqq), so host RAM never holds the whole model and a 70B cell needs no 140 GB checkpoint.

``HfModel.quantize_s`` is the time of a quantization step separate from loading (GPTQ/AWQ
calibration, HQQ); the load time minus it is the load alone. Schemes that quantize inside
from_pretrained (bnb, torchao) report None: their load time includes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.core.config import ArchFacts, QuantConfig
from bench.engines.hf.offload import (
    OffloadBudget,
    as_torch_device,
    device_of,
    dispatch,
    pinned,
    plan_device_map,
    pretrained_placement,
)
from bench.engines.hf.offload import describe as describe_offload
from bench.engines.hf.quant import (
    KEEP_UNQUANTIZED,
    hqq_linear,
    is_quantizable_linear,
    load_time_config,
    quantize_hqq_,
    quantize_torchao_,
    torch_dtype,
)
from bench.weights.arch import hf_config
from bench.weights.random_weights import SeededRandom, materialize_module


@dataclass
class HfModel:
    """A transformers model as loaded, before the engine wraps it for measuring."""

    model: torch.nn.Module
    tokenizer: Optional[Any]
    hf_id: Optional[str]
    revision: Optional[str]  # the commit actually loaded, when known
    quantize_s: Optional[float] = None  # quantization after load (calibration), when separate
    note: Optional[str] = None  # how the quantized weights came to be (cache hit, kernel, ...)


def load_pretrained(path: str, revision: Optional[str], quant: QuantConfig,
                    device: torch.device, with_tokenizer: bool,
                    budget: Optional[OffloadBudget] = None,
                    auto_class: Any = AutoModelForCausalLM) -> HfModel:
    token = os.environ.get("HF_TOKEN") or None
    # HQQ quantizes after loading: the float model is read into host RAM and each layer is
    # quantized straight onto the device, so the GPU never holds the unquantized model
    # (which would make the HQQ cell's peak, and its ❌, bench's loading order's)
    load_on = torch.device("cpu") if quant.method == "hqq" else device
    model = auto_class.from_pretrained(
        path, revision=revision, token=token, dtype=torch_dtype(quant),
        quantization_config=load_time_config(quant, offload=budget is not None),
        **pretrained_placement(load_on, budget))
    model.eval()
    quantize_s = quantize_hqq_(model, quant, device) if quant.method == "hqq" else None
    tokenizer = (AutoTokenizer.from_pretrained(path, revision=revision, token=token)
                 if with_tokenizer else None)
    commit = getattr(model.config, "_commit_hash", None) or revision
    note = (describe_offload(model, getattr(model, "hf_device_map", None), budget)
            if budget is not None else None)
    return HfModel(model=model, tokenizer=tokenizer, hf_id=path, revision=commit,
                       quantize_s=quantize_s, note=note)


def _materialize_bnb_weight(module: torch.nn.Module, dtype: torch.dtype,
                            device: torch.device, rand: SeededRandom) -> None:
    """Quantize a random weight the way transformers' bnb quantizer does at load time, the
    random values drawn on the device itself."""
    import bitsandbytes as bnb

    old = module.weight
    value = rand.normal(old.shape, dtype, device)
    kwargs = dict(old.__dict__)
    if isinstance(module, bnb.nn.Linear4bit):
        module.weight = bnb.nn.Params4bit(value, requires_grad=False, **kwargs).to(device)
    else:
        kwargs.pop("SCB", None)
        weight = bnb.nn.Int8Params(value, requires_grad=False, **kwargs)
        # Int8Params quantizes only on a move off the CPU; these values are already in place
        module.weight = weight._quantize(device)


def load_synthetic(arch: ArchFacts, quant: QuantConfig, device: torch.device,
                   seed: int, budget: Optional[OffloadBudget] = None) -> HfModel:
    """The true architecture with random weights, built layer by layer on the device; each
    Linear is quantized (bnb, torchao, hqq) as soon as its random weight exists. With an
    offload budget, modules go where from_pretrained(device_map="auto") would put them."""

    if quant.method in ("gptq", "awq"):
        raise ValueError("gptq/awq synthetic weights are calibrated by bench.engines.hf.gptq")
    return build_synthetic(hf_config(arch), AutoModelForCausalLM, quant, device, seed, budget)


def build_synthetic(config: Any, auto_class: Any, quant: QuantConfig, device: torch.device,
                    seed: int, budget: Optional[OffloadBudget] = None) -> HfModel:
    """`auto_class`'s model of `config` built on the meta device, materialised with random
    weights (quantized as they appear), its tied embeddings tied as from_pretrained ties
    them (one storage, as the checkpoint has)."""
    import accelerate

    with accelerate.init_empty_weights(include_buffers=False):
        model = auto_class.from_config(config, dtype=torch_dtype(quant))
    model, quantize_s, note = materialize_synthetic(model, quant, device, seed, budget)
    if ties_embeddings(config):
        model.tie_weights()
    return HfModel(model=model.eval(), tokenizer=None, hf_id=None, revision=None,
                   quantize_s=quantize_s, note=note)


def ties_embeddings(config: Any) -> bool:
    """Whether the checkpoint ties its (text model's) embeddings to the head: composite
    configs hold it on the text config alone (transformers 5's Blip2Config has no
    `tie_word_embeddings` of its own; reading it raised, and no BLIP-2 synthetic cell ran)."""
    return bool(getattr(config, "tie_word_embeddings", False)
                or getattr(config.get_text_config(), "tie_word_embeddings", False))


def materialize_synthetic(model: torch.nn.Module, quant: QuantConfig, device: torch.device,
                          seed: int, budget: Optional[OffloadBudget] = None,
                          keep: Optional[list[str]] = None
                          ) -> tuple[torch.nn.Module, Optional[float], Optional[str]]:
    """Random weights for a module built on the meta device (any architecture: a language
    model, a vision tower, a denoiser), materialised layer by layer on the device and each
    Linear quantized by the scheme as soon as its weight exists; `keep`: module names left
    unquantized (the output head by default). Returns the module, the seconds a separately
    timed quantization took (HQQ), and where an offload budget put what."""
    keep = KEEP_UNQUANTIZED if keep is None else keep
    dtype = torch_dtype(quant)
    bnb_config = (load_time_config(quant, offload=budget is not None)
                  if quant.method == "bnb" else None)
    if bnb_config is not None:
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear

        model = replace_with_bnb_linear(model, modules_to_not_convert=keep,
                                        quantization_config=bnb_config)
    device_map = (plan_device_map(model, bnb_config, device, budget)
                  if budget is not None else pinned(device))
    rand = SeededRandom(seed)
    modules = dict(model.named_modules())
    quantize_s = 0.0 if quant.method == "hqq" else None
    for qualname, module in modules.items():
        target = as_torch_device(device_of(qualname, device_map))
        if bnb_config is not None and module.__class__.__module__.startswith("bitsandbytes"):
            _materialize_bnb_weight(module, dtype, target, rand)
        materialize_module(module, dtype, target, rand)
        if not is_quantizable_linear(qualname, module, keep):
            continue
        if quant.method == "torchao":  # in place, as TorchAoConfig does while loading
            quantize_torchao_(module, quant)
        elif quant.method == "hqq":  # a separate step, as after from_pretrained: timed
            start = time.perf_counter()
            parent, _, child = qualname.rpartition(".")
            setattr(modules[parent], child, hqq_linear(module, quant, device))
            quantize_s = (quantize_s or 0.0) + time.perf_counter() - start
    note = None
    if budget is not None:
        dispatch(model, device_map, device)
        note = describe_offload(model, device_map, budget)
    model.eval()
    return model, quantize_s, note
