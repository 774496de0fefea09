"""image-text-to-text: a vision-language model answers a prompt about a real photograph
(bench.data.images), generating exactly N tokens; its speed is text generation's, with the
image's preprocessing and vision encoder timed beside (the engine's speed facts). Its
quality reference is the reference model's own greedy caption of the workload's image and
prompt: every cell scores those token ids, so KL and top-1 measure how far the scheme moves
the answer, image tokens included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.tasks.base import check_image
from bench.tasks.text_generation import TextGeneration

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import LoadedModel
    from bench.tasks.text_generation.quality import Chunks, Reference

CAPTION_TOKENS = 32  # the reference's caption: the tokens it is scored on


class Caption:
    """The reference's greedy caption of the workload's image with its prompt: one chunk,
    the image's placeholders and the prompt, then the caption (the scored part)."""

    def settings(self, cfg: "BenchConfig") -> dict[str, Any]:
        from bench.tasks.text_generation.quality import REFERENCE_FORMAT

        w = cfg.workload
        return {"image": w.image, "prompt": w.prompt, "prompt_tokens": w.prompt_tokens,
                "seed": cfg.seed, "caption": CAPTION_TOKENS, "format": REFERENCE_FORMAT}

    def chunks(self, model: "LoadedModel", cfg: "BenchConfig") -> tuple["Chunks", str]:
        import numpy as np

        from bench.data.images import DEFAULT_IMAGE
        from bench.tasks.text_generation.quality import Chunks

        ids = model.caption(CAPTION_TOKENS)[None].astype(np.int64)
        return (Chunks(ids, scored=CAPTION_TOKENS),
                f"the reference's greedy caption ({CAPTION_TOKENS} tokens) of "
                f"{cfg.workload.image or DEFAULT_IMAGE} with the workload's prompt")


@dataclass(frozen=True)
class ImageTextToText(TextGeneration):
    def check(self, cfg: "BenchConfig") -> None:
        super().check(cfg)
        check_image(cfg)

    def reference(self) -> "Reference":
        return Caption()


TASKS = (ImageTextToText("image-text-to-text", "Multimodal (vision-language)",
                         workload_keys=("image", "prompt"), report_rank=10),)
