"""How fast a pipeline makes images (text-to-image) or videos (image-to-video): untimed
warm-up calls, then at least `repeats` timed calls of the workload (more until
`min_duration_s` was timed, at most `max_repeats`), each split by the engine into its
phases: encoders, every denoising step, the VAE's decode. Medians and spreads, as for
tokens (bench.tasks.text_generation.speed); the last call's images are what quality compares.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from bench.core.config import BenchConfig
from bench.meters.windows import GENERATE, TimedWindow
from bench.tasks.timing import repeat_timed

if TYPE_CHECKING:
    from bench.engines.base import ImageRequest, ImageRun, LoadedModel

WARMUP_STEPS = 2  # a warm-up call runs every kernel at the workload's shapes, in few steps


def image_request(cfg: BenchConfig, video: bool) -> "ImageRequest":
    """The workload as one call's inputs (the same for every engine and scheme); `video`:
    the call starts from an image (image-to-video), else from the prompt."""
    from bench.data.images import DEFAULT_IMAGE, DEFAULT_IMAGE_PROMPT, load_image
    from bench.engines.base import ImageRequest

    w = cfg.workload
    native = cfg.model.resolution or [None, None]
    height, width = w.height or native[0], w.width or native[1]
    image = load_image(w.image or DEFAULT_IMAGE) if video else None
    if image is not None and width and height:
        image = image.resize((width, height))
    return ImageRequest(prompt=None if video else (w.prompt or DEFAULT_IMAGE_PROMPT),
                        image=image, height=height, width=width, steps=w.steps,
                        guidance=w.guidance, frames=w.frames, batch_size=w.batch_size,
                        seed=cfg.seed)


@dataclasses.dataclass(frozen=True)
class ImageSpeed:
    fields: dict[str, Any]  # the row's speed columns
    last: "ImageRun"  # the last timed call (its images and latents, for quality)


def measure_images(loaded: "LoadedModel", cfg: BenchConfig, video: bool,
                   window: Optional[TimedWindow] = None) -> ImageSpeed:
    w = cfg.workload
    request = image_request(cfg, video)
    warm = dataclasses.replace(request, steps=WARMUP_STEPS)
    for _ in range(max(1, w.warmup_runs)):
        loaded.render(warm)
    if window is not None:
        window.open(GENERATE)
    runs, wall = repeat_timed(w, w.repeats, lambda: loaded.render(request),
                              lambda run: run.total_s)
    if window is not None:
        window.close(GENERATE, len(runs), 0)
    return ImageSpeed(summarize_images(runs, w.batch_size, wall,
                                       warmups=max(1, w.warmup_runs)), runs[-1])


def summarize_images(runs: "list[ImageRun]", batch_size: int, wall_s: float,
                     warmups: int) -> dict[str, Any]:
    """The speed columns of image calls: per call, per image (per frame), per step."""
    last = runs[-1]
    per_call = [r.total_s for r in runs]
    images = batch_size * (last.frames or 1)
    steps_ms = [1000 * s for r in runs for s in r.step_s]
    call_s = statistics.median(per_call)
    return {"image_call_s": call_s,
            "image_call_s_stdev": statistics.stdev(per_call) if len(runs) > 1 else None,
            "image_call_s_samples": per_call,
            "image_s": call_s / images, "images_per_s": images / call_s,
            "step_ms": statistics.median(steps_ms) if steps_ms else None,
            "step_ms_p90": float(np.percentile(steps_ms, 90)) if steps_ms else None,
            "encoder_ms": 1000 * statistics.median(r.encoder_s for r in runs),
            "vae_decode_ms": (None if last.decode_s is None else
                              1000 * statistics.median(r.decode_s or 0.0 for r in runs)),
            "image_height": last.height, "image_width": last.width,
            "denoise_steps": last.steps, "guidance_scale": last.guidance,
            "video_frames": last.frames, "repeats": len(runs), "timed_s": wall_s,
            "warmup_calls": warmups}
