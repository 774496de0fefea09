"""The report with LLM, multimodal and diffusion rows side by side: real rows written by
bench.results.store.write_row, the real conf/, no mocks.

Image-task rows have no token columns and their model confs no text-model facts; the token
pages must leave them out rather than crash, the compatibility table lists every family under
its own heading, and the claims table says which claimed models were never published.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import build_report
from bench.report.confdata import kv_bytes_per_token, load_conf
from bench.report.symbols import NO, OK, TIGHT
from tests.report_rows import CPU, col, write
from tests.test_report import CONF, find_row, md_tables, under

LLM, VLM, DIFFUSION = ("LLM", "Multimodal (vision-language)",
                       "Diffusion (image and video generation)")
C_3060 = col("rtx3060-12gb")
C_4090 = col("rtx4090-24gb")
SPEED = "Seconds per image (video: per frame)"
PEAK_SDXL = 14_000_000_000  # ✅ on a 24 GiB card, ❌ on a 12 GiB one
REFERENCE = "diffusion fp32 of the hub pipeline, same prompt, seed and initial latents"


def engine_yaml(offload: str = "none", vae_tiling: bool = False) -> str:
    """The `engine:` section a diffusion row's config_yaml records."""
    return (f"engine:\n  name: diffusion\n  offload: {offload}\n  vae_tiling: "
            f"{str(vae_tiling).lower()}\n  vae_slicing: false\n  attention_slicing: false\n")


def image_fields(model: str, task: str = "text-to-image", side: int = 512, steps: int = 25,
                 frames: int | None = None, **fields: object) -> dict[str, object]:
    """A diffusion row's fields: no token workload, its own speed and quality columns."""
    values: dict[str, object] = dict(
        model=model, task=task, engine="diffusion", hf_id=f"hub/{model}", quant="fp16",
        prompt_tokens=None, new_tokens=None, image_height=side, image_width=side,
        denoise_steps=steps, video_frames=frames, guidance_scale=7.5,
        config_yaml=engine_yaml(), cell=f"{model}_{side}_{steps}",
        component_bytes={"unet": 1_700_000_000, "vae": 160_000_000})
    values.update(fields)
    return values


def write_families(results: Path, with_offload: bool = True) -> None:
    """An LLM, a vision-language model and diffusion models (GPU, CPU, offload, video)."""
    write(results, peak_device_bytes=14_400_000_000, weights_bytes=13_476_839_424,
          decode_tok_s=40.0, ttft_ms=45.0)
    write(results, model="blip2-opt-2.7b", task="image-text-to-text",
          hf_id="Salesforce/blip2-opt-2.7b", peak_device_bytes=8_000_000_000,
          weights_bytes=7_700_000_000, decode_tok_s=30.0, ttft_ms=60.0)
    for side, peak in ((512, 3_000_000_000), (768, 4_500_000_000)):
        write(results, **image_fields(
            "sd-1.5", side=side, peak_device_bytes=peak, weights_bytes=2_130_000_000,
            image_call_s=2.0, image_call_s_stdev=0.1, image_s=2.0, images_per_s=0.5,
            step_ms=75.0, psnr_db=31.25, ssim=0.9812, latent_mse=1e-4,
            quality_reference=REFERENCE))
    write(results, **image_fields("sd-1.5", quant="fp32", psnr_db=100.0, ssim=1.0,
                                  peak_device_bytes=5_000_000_000, image_call_s=3.0,
                                  image_s=3.0, step_ms=110.0, quality_reference=REFERENCE,
                                  cell="sd-1.5_fp32"))
    # SDXL: 14 GB on an H100; out of memory under a 12 GiB cap, unless offloaded
    write(results, **image_fields("sdxl-base", side=1024, peak_device_bytes=PEAK_SDXL,
                                  image_call_s=5.0, image_s=5.0, step_ms=180.0))
    write(results, **image_fields("sdxl-base", side=1024, gpu_class="rtx3060-12gb",
                                  emulated=True, status="oom", error="CUDA out of memory",
                                  cell="sdxl_3060"))
    if with_offload:
        write(results, **image_fields("sdxl-base", side=1024, gpu_class="rtx3060-12gb",
                                      emulated=True, offload=True,
                                      config_yaml=engine_yaml("model"),
                                      peak_device_bytes=7_000_000_000, image_call_s=9.0,
                                      image_s=9.0, step_ms=320.0, cell="sdxl_3060_offload"))
    # Stable Video Diffusion on a CPU: seconds per frame, host RAM only
    write(results, **image_fields("svd-xt", task="image-to-video", side=256, steps=4,
                                  frames=14, image_call_s=28.0, image_s=2.0, step_ms=6000.0,
                                  peak_host_rss_bytes=9_000_000_000, **CPU))


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families")
    write_families(root / "results")
    build_report(root / "results", root / "reports")
    return root / "reports"


def text_of(reports: Path, name: str) -> str:
    return (reports / name).read_text(encoding="utf-8")


def test_the_token_pages_leave_image_rows_out(families: Path) -> None:
    """The report used to crash on a diffusion conf's null KV facts; now the context,
    roofline and efficiency pages carry the text rows only, and the rest carry every row."""
    context = md_tables(text_of(families, "context.md"))[0]
    assert {r["Model"] for r in context} == {"llama2-7b", "blip2-opt-2.7b"}
    roofline = md_tables(text_of(families, "roofline.md"))[0]
    assert {r["Model"] for r in roofline} == {"llama2-7b", "blip2-opt-2.7b"}
    assert "sd-1.5" not in text_of(families, "efficiency.md")
    measured = md_tables(text_of(families, "measurements.md"))[0]
    assert find_row(measured, Model="svd-xt")["s/image (video: /frame)"] == "2.00"
    host = md_tables(text_of(families, "host.md"))[0]
    assert find_row(host, Model="svd-xt")["Workload"] == "b1 · 256×256, 4 steps, 14 frames"


def test_no_kv_cache_for_a_pipeline_or_an_unknown_model() -> None:
    conf = load_conf(CONF)
    assert conf.model_tasks["sd-1.5"] == "text-to-image"
    row = {"model": "sd-1.5", "quant": "fp16", "engine": "diffusion", "batch_size": 1}
    assert kv_bytes_per_token(conf, row) is None
    assert kv_bytes_per_token(conf, {**row, "model": "no-such-model"}) is None
    llm = {"model": "llama2-7b", "quant": "fp16", "engine": "hf", "batch_size": 1}
    assert kv_bytes_per_token(conf, llm) == 2 * 32 * 32 * 128 * 2


def test_each_family_has_its_heading_and_only_its_rows(families: Path) -> None:
    text = text_of(families, "compatibility.md")
    for heading in (LLM, VLM, DIFFUSION):
        assert f"\n## {heading}\n" in text
    assert text.index(f"## {LLM}") < text.index(f"## {VLM}") < text.index(f"## {DIFFUSION}")
    models = {h: {r["Model"] for r in md_tables(under(text, h))[0]} for h in (LLM, VLM,
                                                                                DIFFUSION)}
    assert models == {LLM: {"llama2-7b (synthetic)"}, VLM: {"blip2-opt-2.7b (synthetic)"},
                      DIFFUSION: {"sd-1.5 (synthetic)", "sdxl-base (synthetic)",
                                  "svd-xt (synthetic)"}}
    llm = md_tables(under(text, LLM))[0][0]
    assert llm["Decode tok/s"] == "40.0" and llm[C_4090] == OK
    glance = under(text_of(families, "README.md"), "At a glance")
    assert all(f"### {h}" in glance for h in (LLM, VLM, DIFFUSION))


def test_a_diffusion_row_shows_seconds_per_image_and_step_and_psnr(families: Path) -> None:
    table = md_tables(under(text_of(families, "compatibility.md"), DIFFUSION))[0]
    sd = find_row(table, Model="sd-1.5 (synthetic)", Quant="fp16",
                  Workload="b1 · 512×512, 25 steps")
    assert sd[SPEED] == "2.00 s/image ± 0.100"
    assert sd["Seconds per step"] == "0.0750 s/step"
    assert sd["Quality vs reference"] == f"PSNR 31.25 dB · SSIM 0.9812 (vs {REFERENCE})"
    assert sd["Peak device"] == "2.79 GiB" and sd[C_3060] == OK
    assert sd["Task"] == "text-to-image"
    assert sd["Memory saving"] == "none · offload: none"
    video = find_row(table, Model="svd-xt (synthetic)")
    assert video[SPEED] == "2.00 s/frame" and video["Task"] == "image-to-video"
    assert video["Peak device"] == "— (CPU only)" and video[C_4090] == "❓"


def test_a_diffusion_cell_that_fits_only_with_offload_is_tight(families: Path,
                                                               tmp_path: Path) -> None:
    table = md_tables(under(text_of(families, "compatibility.md"), DIFFUSION))[0]
    sdxl = find_row(table, Model="sdxl-base (synthetic)")
    assert sdxl[C_4090] == OK  # 14 GB without offload
    assert sdxl[C_3060] == f"{TIGHT} offload"  # ❌ oom without, fits with engine.offload
    assert sdxl["Memory saving"] == "none · offload: model, none"
    # the same rows without the offload run: the 12 GiB class is only an OOM
    write_families(tmp_path / "results", with_offload=False)
    build_report(tmp_path / "results", tmp_path / "reports")
    table = md_tables(under(text_of(tmp_path / "reports", "compatibility.md"), DIFFUSION))[0]
    assert find_row(table, Model="sdxl-base (synthetic)")[C_3060] == f"{NO} oom"


def test_claims_are_grouped_by_family_and_unpublished_models_say_so(families: Path) -> None:
    from bench.report.claims import SOURCE_TITLES

    text = text_of(families, "claims.md")
    table_a = SOURCE_TITLES["table-a"]
    vlm = md_tables(under(text, table_a, VLM))[0]
    diffusion = md_tables(under(text, table_a, DIFFUSION))[0]
    for table, claim, exists in ((vlm, "Llama 3.2 Vision 3B", "11B and 90B"),
                                 (vlm, "Kosmos-3", "Kosmos-2"),
                                 (diffusion, "Video Diffusion XL", "svd-xt")):
        row = find_row(table, Claim=claim)
        assert row["Compared with"].startswith("no public checkpoint: ")
        assert exists in row["Compared with"]
        assert row["Measured peak device"] == "no public checkpoint"
    assert not any(r["Claim"] == "Kosmos-3" for r in md_tables(under(text, table_a, LLM))[0])
    # a claim mapped to a conf that does not exist (yet) is simply not measured
    assert find_row(vlm, Claim="Llama 3.2 90B Vision")["Measured peak device"].startswith("❓")
    sdxl = find_row(diffusion, Claim="Stable Diffusion XL")  # 20 GB claimed, 14 GB measured
    assert sdxl["Compared with"] == "sdxl-base fp16 (diffusion)"
    assert sdxl["Measured peak device"] == "14.00 GB"
    assert sdxl["Claim error"] == "+6.00 GB"
    assert sdxl["rtx4090-24gb: claim / measured"] == f"{OK} / {OK}"
    sd15 = find_row(md_tables(under(text, SOURCE_TITLES["table-b"], DIFFUSION))[0],
                    Claim="Stable Diffusion 1.5")
    assert sd15["Compared with"] == "sd-1.5 fp16 (diffusion)"
    assert sd15["Workload"] == "b1 · 512×512, 25 steps"  # the most lenient measured


def test_diffusion_plots_exist_and_are_linked_only_with_diffusion_rows(families: Path,
                                                                      tmp_path: Path) -> None:
    figures = families / "figures"
    names = ("diffusion-memory-device.png", "diffusion-memory-host.png",
             "image-quality-text-to-image.png")
    index = text_of(families, "README.md")
    for name in names:
        assert (figures / name).read_bytes().startswith(b"\x89PNG")
        assert f"(figures/{name})" in index and f"(figures/{name})" in text_of(families,
                                                                                "figures.md")
    assert not (figures / "image-quality-image-to-video.png").exists()  # no PSNR measured
    write(tmp_path / "results", peak_device_bytes=14_400_000_000, decode_tok_s=40.0)
    build_report(tmp_path / "results", tmp_path / "reports")
    assert not any((tmp_path / "reports" / "figures" / n).exists() for n in names)
