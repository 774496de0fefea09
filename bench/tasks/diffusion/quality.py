"""What a scheme or a memory-saving mode costs a pipeline's output: the images it makes
against the reference's (the checkpoint at its own precision: float32 for the tiny and hub
Stable Diffusion pipelines) from the same prompt, seed and initial latents, at the same
resolution and steps. PSNR and SSIM of the decoded images (scikit-image's, on [0, 1] RGB),
and the mean squared error of the final latents the VAE decodes.

What they capture: how far the numbers drift from the reference's (a faithful fp16 cell
reads PSNR > 30 dB and SSIM near 1). What they do not: whether an image is good, or
follows its prompt (no FID or CLIP score; those need reference sets and models bench cannot
ship offline). A drift early in denoising can give a different yet equally good image.

The reference is rendered once per model and workload in the cell's untimed prepare step
and cached; random weights (synthetic) have no quality to lose and are not compared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.core.atomic import staged_dir
from bench.core.config import BenchConfig, QuantConfig
from bench.core.paths import under

if TYPE_CHECKING:
    from bench.engines.base import ImageRun

REFERENCE_FORMAT = 1
# PSNR of identical images is infinite; stored capped (an MSE of 1e-10 on [0, 1] pixels is
# below float32's resolution there), so that tables and plots can place it
PSNR_CAP_DB = 100.0


def applies(cfg: BenchConfig) -> bool:
    """Real weights only: random ones have no quality to lose."""
    return cfg.eval.quality and cfg.resolved_weights in ("real", "tiny")


def reference_precision(cfg: BenchConfig) -> str:
    """float32: the tiny pipelines are stored so, and diffusers loads a hub pipeline's
    default (non-variant) weights, float32 for the Stable Diffusion checkpoints."""
    return "float32"


def _entry(cfg: BenchConfig) -> Path:
    w = cfg.workload
    key = json.dumps({"model": cfg.model.name, "hf_id": cfg.model.hf_id,
                      "revision": cfg.model.revision, "weights": cfg.resolved_weights,
                      "config_dir": cfg.model.config_dir, "seed": cfg.seed,
                      "workload": [w.prompt, w.image, w.height, w.width, w.steps, w.guidance,
                                   w.frames, w.batch_size],
                      "device": cfg.cell.device, "format": REFERENCE_FORMAT}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return under(cfg.resolved_cache_dir, "image-quality", f"{cfg.model.name}-{digest}")


def needs_reference(cfg: BenchConfig) -> bool:
    return applies(cfg) and not (_entry(cfg) / "meta.json").is_file()


def _reference_cfg(cfg: BenchConfig) -> BenchConfig:
    from bench.engines.diffusion import DiffusionSettings

    dtype = reference_precision(cfg)
    quant = QuantConfig(name=f"reference-{dtype}", method="none", bits=32, dtype=dtype)
    return dataclasses.replace(cfg, quant=quant, engine=DiffusionSettings())


def ensure_reference(cfg: BenchConfig, video: bool) -> Path:
    """Render the reference once (in the cell's prepare process); returns its entry."""
    from bench.engines import load_engine
    from bench.tasks.diffusion.speed import image_request

    entry = _entry(cfg)
    if (entry / "meta.json").is_file():
        return entry
    ref_cfg = _reference_cfg(cfg)
    engine = load_engine("diffusion")
    engine.setup(ref_cfg)
    engine.prepare(ref_cfg)
    device = engine.resolve_device(cfg.cell.device)
    loaded = engine.load(ref_cfg, device, None, for_eval=False)
    start = time.perf_counter()
    run = loaded.render(image_request(cfg, video))
    seconds = time.perf_counter() - start
    origin = loaded.weights_origin
    loaded.close()
    with staged_dir(entry, "meta.json") as work:
        np.save(work / "images.npy", run.images.astype(np.float32))
        np.save(work / "latents.npy", run.latents.astype(np.float32))
        meta = {"precision": ref_cfg.quant.dtype, "weights_origin": origin,
                "device": device.type, "seconds": seconds, "height": run.height,
                "width": run.width, "steps": run.steps}
        (work / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return entry


def compare(reference: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over the images, each against its reference image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for ref, img in zip(reference, images, strict=True):
        ref, img = np.clip(ref, 0, 1), np.clip(img, 0, 1)
        psnr.append(PSNR_CAP_DB if np.array_equal(ref, img) else
                    min(PSNR_CAP_DB, peak_signal_noise_ratio(ref, img, data_range=1.0)))
        side = min(img.shape[0], img.shape[1])
        window = min(7, side if side % 2 else side - 1)
        ssim.append(structural_similarity(ref, img, data_range=1.0, channel_axis=-1,
                                          win_size=window))
    return {"psnr_db": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def measure_image_quality(run: "ImageRun", cfg: BenchConfig) -> dict[str, Any]:
    """The quality columns of a cell's row, from its last timed call's output."""
    entry = _entry(cfg)
    if not (entry / "meta.json").is_file():
        raise RuntimeError("no image reference: the cell's prepare step did not render one")
    start = time.perf_counter()
    meta = json.loads((entry / "meta.json").read_text())
    reference = np.load(entry / "images.npy")
    ref_latents = np.load(entry / "latents.npy")
    if reference.shape != run.images.shape:
        raise RuntimeError(f"the reference's images are {reference.shape}, this cell's "
                           f"{run.images.shape}")
    fields: dict[str, Any] = compare(reference, run.images)
    fields["latent_mse"] = (float(np.mean((ref_latents - run.latents) ** 2))
                            if ref_latents.shape == run.latents.shape else None)
    fields["quality_reference"] = (f"diffusion {meta['precision']} of "
                                   f"{meta['weights_origin']}, same prompt, seed and initial "
                                   f"latents, {meta['height']}x{meta['width']}, "
                                   f"{meta['steps']} steps")
    fields["quality_s"] = time.perf_counter() - start
    return fields
