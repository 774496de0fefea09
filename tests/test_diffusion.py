"""Image generation: the pipelines bench builds from the config files it ships, the stand-in
tokenizer, the phase clock, image quality's arithmetic, and tiny text-to-image and
image-to-video cells end to end through the same code the real pipelines take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.core.paths import CONF_DIR
from bench.tasks.diffusion.quality import PSNR_CAP_DB, compare
from bench.weights.pipelines import parameter_count, write_clip_tokenizer
from tests.conftest import REPO, run_bench

FAST_IMAGES = ["workload.warmup_runs=1", "workload.repeats=3", "workload.min_duration_s=0",
               "workload.steps=3"]


def _pipeline_models() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        conf = yaml.safe_load(path.read_text())
        if conf.get("config_dir") and conf.get("task") in ("text-to-image", "image-to-video"):
            out.append((path.stem, conf))
    return out


@pytest.mark.parametrize("name, conf", _pipeline_models(), ids=[m for m, _ in _pipeline_models()])
def test_each_pipelines_params_are_what_its_configs_build(name: str, conf: dict) -> None:
    """The published count in the model conf is the architecture the configs build (on the
    meta device: no memory), so synthetic cells measure the real model's size."""
    root = CONF_DIR / "model" / "configs" / conf["config_dir"]
    assert parameter_count(root) == conf["arch"]["params"]


def test_the_stand_in_tokenizer_gives_valid_ids_and_clips_special_ids(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    class TextConfig:
        vocab_size, max_position_embeddings = 49408, 77

    write_clip_tokenizer(tmp_path / "tok", TextConfig())
    tok = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    ids = tok("A photograph of an astronaut", padding="max_length", max_length=77)["input_ids"]
    assert len(ids) == 77 and ids[0] == 49406 and 49407 in ids
    body = ids[1:ids.index(49407)]
    assert len(body) == len("aphotographofanastronaut") and max(body) < 512


def test_the_stand_in_tokenizer_refuses_a_vocabulary_too_small(tmp_path: Path) -> None:
    class TextConfig:
        vocab_size, max_position_embeddings = 300, 77

    with pytest.raises(ValueError, match="cannot hold"):
        write_clip_tokenizer(tmp_path / "tok", TextConfig())


def test_image_quality_is_capped_for_identical_images_and_falls_with_noise() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((2, 16, 16, 3), dtype=np.float32)
    same = compare(ref, ref.copy())
    assert same == {"psnr_db": PSNR_CAP_DB, "ssim": pytest.approx(1.0)}
    slight = compare(ref, np.clip(ref + 0.01 * rng.standard_normal(ref.shape), 0, 1))
    heavy = compare(ref, np.clip(ref + 0.2 * rng.standard_normal(ref.shape), 0, 1))
    # PSNR of Gaussian noise of sigma s on [0, 1]: about -20 log10(s)
    assert 38 < slight["psnr_db"] < 42 and 13 < heavy["psnr_db"] < 16
    assert 1.0 > slight["ssim"] > heavy["ssim"]


def test_the_phase_clock_splits_a_call_into_encoder_steps_and_decode() -> None:
    from bench.engines.diffusion.engine import PhaseClock

    clock = PhaseClock(lambda: None)
    clock.encoder_start()
    clock.encoder_end()
    for step in range(3):
        clock.denoiser_call()
        clock.denoiser_call()  # the second half of classifier-free guidance: same step
        clock.step_end(None, step, 0, {})
    decode = clock.timed(lambda latents: latents * 2, "decode_s", keep_input=True)
    import torch

    out = decode(torch.ones(1, 4, 2, 2))
    assert len(clock.steps) == 3 and all(s >= 0 for s in clock.steps)
    assert clock.encoder_s >= 0 and clock.decode_s >= 0
    assert float(out.sum()) == 32 and clock.latents[0].shape == (1, 4, 2, 2)


def _rows(results: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in results.rglob("*.parquet")],
                     ignore_index=True)


@pytest.mark.slow
def test_tiny_text_to_image_cells_measure_phases_and_quality(tmp_path: Path,
                                                             cache_dir: Path) -> None:
    """fp32 is its own reference (PSNR capped, SSIM 1, latent MSE 0); bf16 drifts from it
    but stays close; every phase is timed and the pipeline's weights are by component."""
    results = tmp_path / "results"
    out = run_bench("-m", "model=tiny-sd", "quant=fp32,bf16,torchao-int8wo", "eval=offline",
                    f"results_dir={results}", f"reports_dir={tmp_path / 'reports'}",
                    *FAST_IMAGES, cwd=REPO, cache=cache_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(results).set_index("quant")
    assert list(rows["status"]) == ["ok"] * 3, rows["error"].tolist()
    fp32, bf16, int8 = rows.loc["fp32"], rows.loc["bf16"], rows.loc["torchao-int8wo"]
    for row in (fp32, bf16):
        assert row["task"] == "text-to-image" and row["engine"] == "diffusion"
        assert (row["image_height"], row["image_width"], row["denoise_steps"]) == (16, 16, 3)
        assert row["step_ms"] > 0 and row["encoder_ms"] > 0 and row["vae_decode_ms"] > 0
        assert row["image_call_s"] >= 3 * row["step_ms"] / 1000
        assert set(dict(row["component_bytes"])) == {"unet", "vae", "text_encoder"}
        assert sum(dict(row["component_bytes"]).values()) == row["weights_bytes"]
        assert pd.isna(row["prompt_tokens"]) and pd.isna(row["decode_tok_s"])
        assert "no accuracy task" in row["eval_note"]
    assert (fp32["psnr_db"], fp32["ssim"], fp32["latent_mse"]) == (PSNR_CAP_DB, 1.0, 0.0)
    assert 20 < bf16["psnr_db"] < PSNR_CAP_DB and 0.9 < bf16["ssim"] < 1.0
    assert bf16["latent_mse"] > 0
    assert dict(bf16["component_bytes"])["unet"] * 2 == dict(fp32["component_bytes"])["unet"]
    # torchao on the denoiser only: the UNet shrinks below bf16, the rest stays at bf16
    assert dict(int8["component_bytes"])["unet"] < dict(bf16["component_bytes"])["unet"]
    assert dict(int8["component_bytes"])["vae"] == dict(bf16["component_bytes"])["vae"]
    assert "on the unet" in int8["quant_note"] and 20 < int8["psnr_db"] < PSNR_CAP_DB
    report = (tmp_path / "reports" / "compatibility.md").read_text()
    assert "tiny-sd" in report


@pytest.mark.slow
def test_tiny_image_to_video_and_a_pipeline_without_configs(tmp_path: Path,
                                                            cache_dir: Path) -> None:
    """A video cell times per frame; a model bench has no configs for is a skipped row
    with synthetic weights (the sweep goes on), never a guess."""
    results = tmp_path / "results"
    out = run_bench("model=tiny-svd", "quant=fp16", "eval=none", f"results_dir={results}",
                    f"reports_dir={tmp_path / 'reports'}", *FAST_IMAGES, "workload.frames=3",
                    cwd=REPO, cache=cache_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_bench("model=deepfloyd-if-xl", "weights=synthetic", "quant=fp16", "eval=none",
                    f"results_dir={results}", f"reports_dir={tmp_path / 'reports'}",
                    cwd=REPO, cache=cache_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(results).set_index("model")
    video = rows.loc["tiny-svd"]
    assert video["status"] == "ok", video["error"]
    assert video["task"] == "image-to-video" and video["video_frames"] == 3
    assert video["image_s"] == pytest.approx(video["image_call_s"] / 3)
    assert video["encoder_ms"] > 0 and video["step_ms"] > 0
    assert "image_encoder" in dict(video["component_bytes"])
    skipped = rows.loc["deepfloyd-if-xl"]
    assert skipped["status"] == "skipped" and "config files" in skipped["error"]


def test_the_engine_conf_names_every_setting_of_its_class() -> None:
    from dataclasses import fields

    from bench.engines.diffusion import DiffusionSettings

    conf = yaml.safe_load((CONF_DIR / "engine" / "diffusion.yaml").read_text())
    assert {k for k in conf if k != "defaults"} == {f.name for f in fields(DiffusionSettings)}
    assert json.dumps(conf)  # plain data


def test_component_peaks_split_the_allocator_peak_without_losing_the_cells() -> None:
    """Each component's peak is what the allocator held during its own calls; the cell's
    peak survives the resets (a fake allocator: peaks since the last reset)."""
    from bench.engines.diffusion.engine import ComponentPeaks

    class Allocator:
        now, peak = 0, 0

        def use(self, size: int) -> None:
            self.now += size
            self.peak = max(self.peak, self.now)

        def read(self) -> tuple[int, int]:
            return self.peak, self.peak + 100

        def reset(self) -> None:
            self.peak = self.now

    alloc = Allocator()
    peaks = ComponentPeaks(alloc.read, alloc.reset)
    alloc.use(1000)  # weights loaded
    alloc.use(5000)  # a load-time spike ...
    alloc.use(-5000)  # ... freed
    peaks.start("text_encoder")
    alloc.use(200)
    alloc.use(-200)
    peaks.end("text_encoder")
    for _ in range(2):
        peaks.start("unet")
        alloc.use(700)
        alloc.use(-700)
        peaks.end("unet")
    peaks.start("vae")
    peaks.start("unet")  # called inside: counted in the outer component
    alloc.use(3000)
    alloc.use(-3000)
    peaks.end("unet")
    peaks.end("vae")
    assert peaks.by_component == {"text_encoder": 1200, "unet": 1700, "vae": 4000}
    assert peaks.overall() == (6000, 6100)  # the load-time spike, reset or not
    peaks.restart()
    assert peaks.by_component == {}
