"""A model's true architecture as a transformers config, from the facts in conf/model alone.

Synthetic weights, the tiny model and the parameter-count checks all build the architecture
from these facts; nothing here reads a checkpoint.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from bench.core.config import ArchFacts

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


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the (unquantized) architecture, tied weights counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


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
