"""Image generation: text-to-image (Stable Diffusion, SDXL, ...) and image-to-video (Stable
Video Diffusion) through a denoising pipeline. Speed: seconds per image (per frame of a
video) and per denoising step, with the encoders and the VAE's decode timed apart
(bench.tasks.diffusion.speed); quality: PSNR and SSIM of the images and the MSE of the final
latents against the checkpoint at its own precision, from the same prompt, seed and initial
latents (bench.tasks.diffusion.quality). No accuracy task; the lower bound is the
components' weights alone (none under the engine's offload modes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from bench.tasks.base import Speed, Task, check_image

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Capabilities, LoadedModel
    from bench.meters.windows import TimedWindow
    from bench.tasks.bounds import Prediction

FAMILY = "Diffusion (image and video generation)"


@dataclass(frozen=True)
class Denoising(Task):
    """A pipeline that denoises latents into images; `video`: from an image, into frames."""

    video: bool = False

    def check(self, cfg: "BenchConfig") -> None:
        check_image(cfg)

    def describe_workload(self, cfg: "BenchConfig") -> str:
        w = cfg.workload
        native = cfg.model.resolution or [None, None]
        height, width = w.height or native[0], w.width or native[1]
        size = f"{height}x{width}" if height and width else "native"
        return (f"size={size} steps={w.steps or 'default'}"
                + (f" frames={w.frames}" if w.frames else ""))

    def workload_fields(self, cfg: "BenchConfig") -> dict[str, Any]:
        """Resolution, steps and frames as asked (the cell fills in the pipeline's defaults
        it really ran)."""
        w = cfg.workload
        return {"image_height": w.height, "image_width": w.width, "denoise_steps": w.steps,
                "guidance_scale": w.guidance, "video_frames": w.frames}

    def lower_bound(self, cfg: "BenchConfig") -> "Optional[Prediction]":
        """The components' weights at the scheme's precision (no offload: its modes move
        them to the host between calls)."""
        from bench.tasks.bounds import pipeline_bound

        return None if cfg.engine.offloads() else pipeline_bound(cfg.model.arch, cfg.quant)

    def needs_reference(self, cfg: "BenchConfig") -> bool:
        from bench.tasks.diffusion import quality

        return quality.applies(cfg) and quality.needs_reference(cfg)

    def prepare(self, cfg: "BenchConfig") -> None:
        from bench.tasks.diffusion import quality

        if quality.applies(cfg):
            quality.ensure_reference(cfg, self.video)

    def measure_speed(self, loaded: "LoadedModel", cfg: "BenchConfig",
                      window: "TimedWindow") -> Speed:
        from bench.tasks.diffusion.speed import measure_images

        speed = measure_images(loaded, cfg, self.video, window=window)
        return Speed(speed.fields, speed.last)

    def measures_quality(self, cfg: "BenchConfig", caps: "Capabilities") -> bool:
        from bench.tasks.diffusion import quality

        return quality.applies(cfg)

    def measure_quality(self, loaded: "LoadedModel", cfg: "BenchConfig",
                        speed: Optional[Speed]) -> dict[str, Any]:
        from bench.tasks.diffusion.quality import measure_image_quality

        assert speed is not None and speed.last is not None
        return measure_image_quality(speed.last, cfg)


_IMAGE = dict(family=FAMILY, layout="images", speed_column="image_call_s",
              speed_label="Seconds per image (video: per frame)", report_rank=20)
TASKS = (Denoising("text-to-image", workload_keys=("prompt", "height", "width", "steps",
                                                   "guidance"), **_IMAGE),
         Denoising("image-to-video", workload_keys=("image", "height", "width", "steps",
                                                    "guidance", "frames"), video=True,
                   **_IMAGE))
