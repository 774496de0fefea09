"""Vision-language models (task image-text-to-text) through transformers: the model
(AutoModelForImageTextToText: BLIP-2, LLaVA / Pixtral, Mllama, Kosmos-2, Pix2Struct), and
the inputs one image and a prompt become.

Real weights take the model's own processor from its checkpoint (the prompt written the way
the model expects, through its chat template where it has one). Random weights (tiny,
synthetic) have no processor: their inputs are built from the config, as the processor
would shape them — the photograph resized to the vision tower's input and normalized with
CLIP's statistics, the image placeholder tokens the model replaces with its image features,
then the workload's prompt tokens — for the architectures whose input layout bench knows
(LLaVA-style, BLIP-2, Mllama, Kosmos-2); Pix2Struct, an encoder-decoder, gets its
variable-resolution patches from transformers' own image processor (it needs no download)
and the prompt as the decoder's start. Others are measured with weights=real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from bench.core.errors import SkipCell

if TYPE_CHECKING:
    pass

# CLIP's normalization (LLaVA's and BLIP-2's processors use these statistics)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SYNTHETIC_INPUTS = ("llava", "blip-2", "mllama", "kosmos-2", "pix2struct")  # bench builds these
KOSMOS_PLACEHOLDER = 4  # any id: Kosmos-2 finds its image positions by a mask, not an id


def vision_tower(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The module that encodes the image (timed by a hook), or None."""
    best: Optional[tuple[int, torch.nn.Module]] = None
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("vision_model", "vision_tower", "encoder"):
            depth = name.count(".")
            if best is None or depth < best[0]:
                best = (depth, module)
    return best[1] if best is not None else None


def full_precision_modules(model: torch.nn.Module) -> list[str]:
    """The parts of the model (two levels deep at most) that hold no quantized weight: what
    a scheme left in full precision (vision towers, projectors, the output head)."""
    from bench.engines.hf.quant import quantized_params

    found: list[str] = []

    def walk(module: torch.nn.Module, prefix: str, depth: int) -> None:
        for name, child in module.named_children():
            if not any(p.numel() for p in child.parameters()):
                continue
            if quantized_params(child) == 0:
                found.append(prefix + name)
            elif depth < 2:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(model, "", 0)
    return found


@dataclass
class VisionPrompt:
    """One request's model inputs (image features' placeholders included), how long the
    processor took to make them, and how many of the prompt's tokens are the image's."""

    inputs: dict[str, torch.Tensor]
    preprocess_s: float
    image_tokens: int
    ids_key: str = "input_ids"  # an encoder-decoder's text is the decoder's: decoder_input_ids

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs[self.ids_key]

    @property
    def _text_keys(self) -> tuple[str, ...]:
        # a decoder-only model's attention_mask covers the text; an encoder-decoder's, the image
        return (self.ids_key,) if self.ids_key != "input_ids" else ("input_ids", "attention_mask")

    def extra(self) -> dict[str, torch.Tensor]:
        """Everything but the token ids (pixel values, masks the model needs)."""
        return {k: v for k, v in self.inputs.items() if k not in self._text_keys}

    def with_ids(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inputs with other token ids (same image placeholders first; a per-token
        cross-attention mask extended as generation extends it, by its last row)."""
        extra = self.extra()
        marks = extra.get("image_embeds_position_mask")  # Kosmos-2: no image past the prompt
        if marks is not None and marks.shape[1] != ids.shape[1]:
            more = ids.shape[1] - marks.shape[1]
            extra["image_embeds_position_mask"] = (
                torch.cat([marks, marks.new_zeros((marks.shape[0], more))], dim=1)
                if more > 0 else marks[:, :ids.shape[1]])
        cross = extra.get("cross_attention_mask")
        if cross is not None and cross.shape[1] != ids.shape[1]:
            more = ids.shape[1] - cross.shape[1]
            extra["cross_attention_mask"] = (
                torch.cat([cross, cross[:, -1:].expand(-1, more, -1, -1)], dim=1)
                if more > 0 else cross[:, :ids.shape[1]])
        if self.ids_key != "input_ids":
            return {**extra, self.ids_key: ids}
        return {**extra, "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _normalized(image: Any, size: int) -> np.ndarray:
    """The photograph as the vision tower takes it: size x size RGB, CLIP-normalized, CHW."""
    from PIL import Image

    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC),
                        dtype=np.float32) / 255.0
    pixels = (pixels - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return pixels.transpose(2, 0, 1)


def _mllama_inputs(config: Any, pixels: torch.Tensor, ids: torch.Tensor,
                   batch: int) -> dict[str, torch.Tensor]:
    """Mllama's image as one tile of its 1x1 layout (the processor's choice for a square
    photograph at the tile size): the tile dimension padded to max_num_tiles and masked, the
    aspect-ratio id of 1x1, and every text token after the image attending to that tile."""
    tiles = int(config.vision_config.max_num_tiles)
    padded = torch.zeros((batch, 1, tiles, *pixels.shape[1:]), dtype=pixels.dtype,
                         device=pixels.device)
    padded[:, 0, 0] = pixels[0]
    tile_mask = torch.zeros((batch, 1, tiles), dtype=torch.long, device=pixels.device)
    tile_mask[:, :, 0] = 1
    cross = torch.zeros((batch, ids.shape[1], 1, tiles), dtype=torch.long, device=ids.device)
    cross[:, :, 0, 0] = 1
    return {"pixel_values": padded, "aspect_ratio_ids": torch.ones((batch, 1),
                                                                   dtype=torch.long,
                                                                   device=ids.device),
            "aspect_ratio_mask": tile_mask, "cross_attention_mask": cross}


def _image_tokens(config: Any) -> tuple[int, int]:
    """(placeholder token id, how many) the model replaces with image features."""
    model_type = config.model_type
    if model_type == "blip-2":
        return int(config.image_token_index), int(config.num_query_tokens)
    if model_type == "kosmos-2":  # positions marked by image_embeds_position_mask
        return KOSMOS_PLACEHOLDER, int(config.latent_query_num)
    if model_type == "mllama":  # one <|image|> token; the image enters by cross-attention
        return int(config.image_token_index), 1
    if model_type == "llava":  # Pixtral's tower too: one feature per patch, no class token
        vision = config.vision_config
        patches = (int(vision.image_size) // int(vision.patch_size)) ** 2
        pixtral = vision.model_type == "pixtral"
        extra = 1 if config.vision_feature_select_strategy == "full" and not pixtral else 0
        return int(config.image_token_index), patches + extra
    raise SkipCell(f"weights=synthetic and tiny build the inputs of {', '.join(SYNTHETIC_INPUTS)} "
                   f"models only; model type {model_type} takes its processor's: weights=real")


def _pix2struct_prompt(config: Any, image: Any, text_ids: np.ndarray,
                       device: torch.device, dtype: torch.dtype) -> VisionPrompt:
    """Pix2Struct's inputs: the photograph cut by transformers' image processor into the
    patches of the vision config's size (at most the processor's 2,048, aspect ratio kept),
    each flattened with its row and column; the decoder starts from its start token followed
    by the prompt's ids. The image's tokens are its real (unpadded) patches."""
    from transformers import Pix2StructImageProcessorPil  # PIL: no torchvision needed

    side = int(round((int(config.vision_config.patch_embed_hidden_size) / 3) ** 0.5))
    start = time.perf_counter()
    made = Pix2StructImageProcessorPil(patch_size={"height": side, "width": side})(
        images=image.convert("RGB"), return_tensors="pt")
    batch = text_ids.shape[0]
    patches = made["flattened_patches"].expand(batch, -1, -1).to(device, dtype).contiguous()
    mask = made["attention_mask"].expand(batch, -1).to(device).contiguous()
    first = np.full((batch, 1), int(config.decoder_start_token_id), dtype=np.int64)
    ids = torch.from_numpy(np.concatenate([first, text_ids.astype(np.int64)], axis=1)).to(device)
    inputs = {"flattened_patches": patches, "attention_mask": mask, "decoder_input_ids": ids}
    return VisionPrompt(inputs, time.perf_counter() - start, int(mask[0].sum()),
                        ids_key="decoder_input_ids")


def built_prompt(config: Any, image: Any, text_ids: np.ndarray,
                 device: torch.device, dtype: torch.dtype) -> VisionPrompt:
    """Inputs for random weights: the image placeholders, then the prompt's token ids (any
    placeholder id among them moved off it), and the normalized photograph."""
    if config.model_type == "pix2struct":
        return _pix2struct_prompt(config, image, text_ids, device, dtype)
    start = time.perf_counter()
    token, count = _image_tokens(config)
    size = int(config.vision_config.image_size)
    pixels = torch.from_numpy(_normalized(image, size))[None].to(device, dtype)
    text = np.where(text_ids == token, (token + 1) % int(config.text_config.vocab_size),
                    text_ids)
    batch = text.shape[0]
    ids = torch.cat([torch.full((batch, count), token, dtype=torch.long),
                     torch.from_numpy(text).long()], dim=1).to(device)
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if config.model_type == "mllama":
        inputs.update(_mllama_inputs(config, pixels, ids, batch))
    elif config.model_type == "kosmos-2":
        inputs["pixel_values"] = pixels.expand(batch, -1, -1, -1).contiguous()
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[:, :count] = True
        inputs["image_embeds_position_mask"] = mask
    else:
        inputs["pixel_values"] = pixels.expand(batch, -1, -1, -1).contiguous()
    if getattr(config.vision_config, "model_type", None) == "pixtral":
        inputs["image_sizes"] = torch.tensor([[size, size]] * batch, device=device)
    return VisionPrompt(inputs, time.perf_counter() - start, count)


def processor_prompt(source: str, revision: Optional[str], image: Any, prompt: str,
                     batch: int, device: torch.device, dtype: torch.dtype) -> VisionPrompt:
    """Inputs for a real checkpoint, made by its own processor (its chat template where it
    has one, so the image tokens are where the model was trained to see them)."""
    import os

    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(source, revision=revision,
                                              token=os.environ.get("HF_TOKEN") or None)
    text: Optional[str] = prompt
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
    # Pix2Struct's pretrained (not VQA) checkpoints parse the image from the decoder's start
    pix2struct = type(processor).__name__.startswith("Pix2Struct")
    if pix2struct and not getattr(processor.image_processor, "is_vqa", False):
        text = None
    start = time.perf_counter()
    inputs = processor(images=[image] * batch, text=None if text is None else [text] * batch,
                       return_tensors="pt")
    preprocess_s = time.perf_counter() - start
    moved = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
             for k, v in inputs.items()
             if isinstance(v, torch.Tensor) and k != "decoder_attention_mask"}
    if not pix2struct:
        return VisionPrompt(moved, preprocess_s, image_tokens=0)
    if "decoder_input_ids" not in moved:
        moved["decoder_input_ids"] = torch.zeros((batch, 1), dtype=torch.long, device=device)
    return VisionPrompt(moved, preprocess_s, int(moved["attention_mask"][0].sum()),
                        ids_key="decoder_input_ids")
