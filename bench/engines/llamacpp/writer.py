"""bench's own GGUF writer for llama-architecture models: the tiny model and synthetic weights.

llama.cpp's convert_hf_to_gguf.py converts real checkpoints (bench.engines.llamacpp.files),
but it identifies a BPE pre-tokenizer by hashing the tokens of a test text and refuses any
vocabulary it does not know, as the tiny model's own byte-level BPE; and synthetic weights
have no checkpoint or tokenizer at all. This writer uses the `gguf` package (the writer
llama.cpp's converter itself uses) with llama.cpp's conventions for the llama architecture:
the hyper-parameter keys, the tensor names of gguf's TensorNameMap, and the Q/K row
permutation llama.cpp's rope expects. Tensors are streamed one at a time, so a 7B synthetic
model never sits in memory whole. A test checks tokenization and next-token
log-probabilities against transformers on the same weights.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import gguf
import numpy as np

from bench.core.config import ArchFacts
from bench.weights.vocab import byte_symbols

WRITER_VERSION = 1
# the synthetic vocabulary's layout (2: byte pairs with their merges, which llama.cpp needs)
SYNTHETIC_VOCAB_VERSION = 2
INIT_STD = 0.02  # the initializer_range of Llama-family configs (transformers' synthetic too)
FILE_TYPES = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
              "BF16": gguf.LlamaFileType.MOSTLY_BF16}
_TENSOR_TYPES = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
                 "BF16": gguf.GGMLQuantizationType.BF16}

TensorSource = Callable[[], np.ndarray]


@dataclass(frozen=True)
class Vocab:
    """A byte-level BPE vocabulary in GGUF's terms."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos: Optional[int]
    eos: Optional[int]
    pad: Optional[int]
    unk: Optional[int]


def vocab_from_tokenizer_json(path: Path, vocab_size: int) -> Vocab:
    """The vocabulary of a transformers byte-level BPE tokenizer (tokenizer.json)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: bench's GGUF writer takes byte-level BPE tokenizers only "
                         f"(got {model.get('type')})")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for token, index in model["vocab"].items():
        tokens[index], types[index] = token, gguf.TokenType.NORMAL
    special = {}
    for added in data.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else (
            gguf.TokenType.USER_DEFINED)
        special[added["content"]] = added["id"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    config = json.loads((path.parent / "tokenizer_config.json").read_text(encoding="utf-8"))

    def sid(key: str) -> Optional[int]:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return special.get(value) if value is not None else None

    return Vocab(tokens, [int(t) for t in types], merges, sid("bos_token"), sid("eos_token"),
                 sid("pad_token"), sid("unk_token"))


def synthetic_vocab(vocab_size: int) -> Vocab:
    """A stand-in byte-level BPE vocabulary for random weights: <unk> <s> </s>, the 256 byte
    symbols, then pairs of them with their merges (llama.cpp's GPT-2 tokenizer refuses a
    file without merges), then unused fillers. Speed and memory do not depend on which
    strings the ids have."""
    specials = ["<unk>", "<s>", "</s>"]
    alphabet = byte_symbols()
    tokens = (specials + alphabet)[:vocab_size]
    pairs = ((a, b) for a in alphabet for b in alphabet)
    merges = []
    for a, b in itertools.islice(pairs, max(0, vocab_size - len(tokens))):
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    normal = len(tokens) - len(specials)
    tokens += [f"<extra_{i}>" for i in range(len(tokens), vocab_size)]
    types = ([gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * normal
             + [gguf.TokenType.UNUSED] * vocab_size)[:vocab_size]
    return Vocab(tokens, [int(t) for t in types], merges, 1, 2, None, 0)


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rope pairs rows differently from transformers' (convert_hf_to_gguf.py)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _encode(array: np.ndarray, file_type: str) -> np.ndarray:
    """1-D tensors (norms) stay F32, as llama.cpp keeps them; 2-D ones take the file type."""
    data = np.ascontiguousarray(array, dtype=np.float32)
    if data.ndim < 2 or file_type == "F32":
        return data
    if file_type == "F16":
        return data.astype(np.float16)
    return gguf.quants.quantize(data, _TENSOR_TYPES["BF16"])


def _load_tensor(path: Path, name: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return fh.get_tensor(name)


def checkpoint_tensors(checkpoint: Path) -> Iterator[tuple[str, TensorSource]]:
    """(transformers name, loader) of every tensor of a checkpoint's safetensors files."""
    from safetensors import safe_open

    for path in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as fh:
            names = list(fh.keys())
        for name in names:
            yield name, (lambda path=path, name=name: _load_tensor(path, name))


def synthetic_llama_tensors(arch: ArchFacts, seed: int) -> Iterator[tuple[str, TensorSource]]:
    """The llama architecture's tensors with random weights (ones for the norms), by name."""
    rng = np.random.default_rng(seed)
    head_dim = arch.hidden_size // arch.num_attention_heads
    kv = arch.num_key_value_heads * head_dim
    h, ff = arch.hidden_size, arch.intermediate_size

    def normal(*shape: int) -> TensorSource:
        return lambda: rng.standard_normal(shape, dtype=np.float32) * np.float32(INIT_STD)

    def ones(n: int) -> TensorSource:
        return lambda: np.ones(n, dtype=np.float32)

    yield "model.embed_tokens.weight", normal(arch.vocab_size, h)
    for i in range(arch.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", ones(h)
        yield p + "self_attn.q_proj.weight", normal(h, h)
        yield p + "self_attn.k_proj.weight", normal(kv, h)
        yield p + "self_attn.v_proj.weight", normal(kv, h)
        yield p + "self_attn.o_proj.weight", normal(h, h)
        yield p + "post_attention_layernorm.weight", ones(h)
        yield p + "mlp.gate_proj.weight", normal(ff, h)
        yield p + "mlp.up_proj.weight", normal(ff, h)
        yield p + "mlp.down_proj.weight", normal(h, ff)
    yield "model.norm.weight", ones(h)
    if not arch.tie_word_embeddings:
        yield "lm_head.weight", normal(arch.vocab_size, h)


def _shape(arch: ArchFacts, name: str) -> tuple[int, ...]:
    """A llama tensor's shape from the facts (to write the header before any data)."""
    head_dim = arch.hidden_size // arch.num_attention_heads
    h, ff, kv = arch.hidden_size, arch.intermediate_size, arch.num_key_value_heads * head_dim
    if name.endswith("norm.weight"):
        return (h,)
    for key, shape in (("embed_tokens", (arch.vocab_size, h)), ("lm_head", (arch.vocab_size, h)),
                       ("q_proj", (h, h)), ("o_proj", (h, h)), ("k_proj", (kv, h)),
                       ("v_proj", (kv, h)), ("gate_proj", (ff, h)), ("up_proj", (ff, h)),
                       ("down_proj", (h, ff))):
        if f".{key}." in f".{name}":
            return shape
    raise ValueError(f"not a llama tensor: {name}")


def write_llama_gguf(out: Path, arch: ArchFacts, tensors: list[tuple[str, TensorSource]],
                     vocab: Vocab, file_type: str, model_name: str) -> None:
    """Write a llama-architecture GGUF of `file_type` (F32, F16, BF16), streaming tensors."""
    if arch.model_type not in ("llama", "mistral"):
        raise ValueError(f"bench's GGUF writer builds llama-architecture models, not "
                         f"{arch.model_type}")
    head_dim = arch.hidden_size // arch.num_attention_heads
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(model_name)
    writer.add_file_type(FILE_TYPES[file_type])
    writer.add_context_length(arch.max_position_embeddings)
    writer.add_embedding_length(arch.hidden_size)
    writer.add_block_count(arch.num_hidden_layers)
    writer.add_feed_forward_length(arch.intermediate_size)
    writer.add_head_count(arch.num_attention_heads)
    writer.add_head_count_kv(arch.num_key_value_heads)
    writer.add_layer_norm_rms_eps(arch.rms_norm_eps or 1e-5)
    writer.add_rope_freq_base(arch.rope_theta or 10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(arch.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex of ByteLevel(use_regex=True)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for value, add in ((vocab.bos, writer.add_bos_token_id), (vocab.eos, writer.add_eos_token_id),
                       (vocab.pad, writer.add_pad_token_id), (vocab.unk, writer.add_unk_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(False)  # transformers' tokenizer adds none (no post-processor)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, arch.num_hidden_layers)
    plan = []
    for name, load in tensors:
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        shape = _shape(arch, name)
        kind = "F32" if len(shape) < 2 else file_type
        itemsize = 4 if kind == "F32" else 2
        writer.add_tensor_info(new, shape, np.dtype(np.float32 if kind == "F32" else np.float16),
                               int(np.prod(shape)) * itemsize, raw_dtype=_TENSOR_TYPES[kind])
        plan.append((name, shape, load))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shape, load in plan:
        array = load()
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, the facts say {shape}")
        if name.endswith("q_proj.weight"):
            array = _permute(array, arch.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            array = _permute(array, arch.num_key_value_heads)
        writer.write_tensor_data(_encode(array, file_type))
    writer.close()


def dequantized_copy(source: Path, out: Path) -> None:
    """The same model as an F32 GGUF: every tensor dequantized by gguf's own dequantizer (the
    values transformers loads from it), the metadata and tokenizer copied as they are. The
    base from which llama.cpp's quantizer writes a packaged model's other types."""
    reader = gguf.GGUFReader(str(source))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch is None:
        raise ValueError(f"{source} names no architecture")
    writer = gguf.GGUFWriter(str(out), str(arch.contents()), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = (int(FILE_TYPES["F32"]) if field.name == gguf.Keys.General.FILE_TYPE
                 else field.contents())
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims innermost first
        writer.add_tensor_info(tensor.name, shape, np.dtype(np.float32),
                               int(np.prod(shape)) * 4, raw_dtype=_TENSOR_TYPES["F32"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.write_tensor_data(np.ascontiguousarray(values, dtype=np.float32)
                                 .reshape(tuple(int(n) for n in reversed(tensor.shape))))
    writer.close()
