"""Vision-language models: the configs bench ships build the published architectures, the
inputs random weights get are shaped as the model's processor would shape them, and a tiny
LLaVA-style cell measures speed, the vision tower's time and quality end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bench.core.paths import CONF_DIR
from tests.conftest import REPO, run_bench, serving


def _vlm_models() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        conf = yaml.safe_load(path.read_text())
        if conf.get("task") == "image-text-to-text":
            out.append((path.stem, conf))
    return out


def _config(conf: dict):
    import json

    from transformers import AutoConfig

    root = CONF_DIR / "model" / "configs" / conf["config_dir"]
    return AutoConfig.for_model(**json.loads((root / "config.json").read_text()))


@pytest.mark.parametrize("name, conf", _vlm_models(), ids=[m for m, _ in _vlm_models()])
def test_each_vlm_config_builds_its_published_parameter_count(name: str, conf: dict) -> None:
    import accelerate
    from transformers import AutoModelForImageTextToText

    from bench.engines.hf.loading import ties_embeddings

    config = _config(conf)
    with accelerate.init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(config)
    model.tie_weights()  # as loading a checkpoint does: the model held is the tied one
    assert sum(p.numel() for p in model.parameters()) == conf["arch"]["params"]
    # the conf says what the checkpoint ties (the bound counts tied embeddings once)
    assert conf["arch"].get("tie_word_embeddings", False) == ties_embeddings(config)


def test_built_inputs_hold_one_placeholder_per_image_feature() -> None:
    """LLaVA replaces each placeholder with one patch feature and BLIP-2 with one query
    output: the counts must match the model's, and a prompt id equal to the placeholder is
    moved off it (one extra placeholder is a shape error inside the model)."""
    from bench.data.images import load_image
    from bench.engines.hf.vision import built_prompt

    conf = dict(_vlm_models())
    image = load_image("chelsea")
    llava = _config(conf["tiny-vlm"])
    text = np.array([[5, llava.image_token_index, 7]])
    prompt = built_prompt(llava, image, text, torch.device("cpu"), torch.float32)
    patches = (llava.vision_config.image_size // llava.vision_config.patch_size) ** 2
    ids = prompt.input_ids[0].tolist()
    assert prompt.image_tokens == patches and ids.count(llava.image_token_index) == patches
    assert ids[-3:] == [5, llava.image_token_index + 1, 7]
    assert prompt.inputs["pixel_values"].shape == (1, 3, 32, 32)
    blip = _config(conf["blip2-opt-2.7b"])
    prompt = built_prompt(blip, image, np.array([[1, 2]]), torch.device("cpu"), torch.float32)
    assert prompt.image_tokens == 32 and prompt.inputs["pixel_values"].shape == (1, 3, 224, 224)


def test_models_without_a_known_input_layout_skip_with_random_weights() -> None:
    from transformers import Idefics3Config

    from bench.core.errors import SkipCell
    from bench.engines.hf.vision import built_prompt

    with pytest.raises(SkipCell, match="weights=real"):
        built_prompt(Idefics3Config(), None, np.array([[1]]), torch.device("cpu"),
                     torch.float32)


def test_pix2struct_gets_its_patches_and_the_prompt_as_the_decoders_start() -> None:
    """The published Pix2Struct config: 16x16 patches of 3 channels plus row and column, at
    most 2,048, the padding masked; the decoder starts from its start token."""
    from bench.data.images import load_image
    from bench.engines.hf.vision import built_prompt

    config = _config(dict(_vlm_models())["pix2struct-base"])
    prompt = built_prompt(config, load_image("astronaut"), np.array([[7, 8], [7, 8]]),
                          torch.device("cpu"), torch.float32)
    patches = prompt.inputs["flattened_patches"]
    assert patches.shape == (2, 2048, 2 + 16 * 16 * 3)
    assert prompt.ids_key == "decoder_input_ids"
    assert prompt.input_ids.tolist() == [[0, 7, 8], [0, 7, 8]]
    assert prompt.image_tokens == int(prompt.inputs["attention_mask"][0].sum()) == 45 * 45
    assert set(prompt.extra()) == {"flattened_patches", "attention_mask"}


@pytest.mark.slow
def test_a_tiny_vlm_cell_measures_the_vision_tower_and_quality(tmp_path: Path,
                                                               cache_dir: Path) -> None:
    results = tmp_path / "results"
    out = run_bench("-m", "model=tiny-vlm", "quant=fp32,bf16", "eval=offline",
                    f"results_dir={results}", f"reports_dir={tmp_path / 'reports'}",
                    "workload.prompt_tokens=16", "workload.new_tokens=8",
                    "workload.repeats=3", "workload.min_duration_s=0",
                    "workload.warmup_until_steady=false", cwd=REPO, cache=cache_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pd.concat([pd.read_parquet(p) for p in results.rglob("*.parquet")]).set_index(
        "quant")
    assert list(rows["status"]) == ["ok", "ok"], rows["error"].tolist()
    for quant in ("fp32", "bf16"):
        row = rows.loc[quant]
        assert row["task"] == "image-text-to-text" and row["engine"] == "hf"
        assert row["image_tokens"] == 16 and row["prompt_tokens"] == 32
        assert row["vision_encode_ms"] > 0 and row["image_preprocess_ms"] > 0
        assert row["ttft_ms"] > row["vision_encode_ms"] and row["decode_tok_s"] > 0
        assert "caption" in row["quality_reference"]
    assert rows.loc["fp32", "kld_mean"] == 0 and rows.loc["fp32", "top1_agree"] == 1
    assert 0 < rows.loc["bf16", "kld_mean"] < 0.1


@pytest.mark.parametrize("kind", ["mllama", "pixtral", "blip-2", "kosmos-2", "pix2struct"])
def test_built_inputs_run_through_each_known_architecture(kind: str) -> None:
    """The inputs random weights get are accepted by each architecture's forward and
    generate (shrunk configs of the same classes: a wrong count of placeholders, tiles or
    masks is an error inside the model)."""
    import accelerate
    from transformers import (
        AutoModelForImageTextToText,
        Blip2Config,
        Kosmos2Config,
        LlavaConfig,
        MllamaConfig,
        Pix2StructConfig,
    )

    from bench.data.images import load_image
    from bench.engines.hf.vision import built_prompt
    from bench.weights.random_weights import materialize_random

    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=300)
    if kind == "mllama":
        config = MllamaConfig(
            text_config={**text, "cross_attention_layers": [1], "pad_token_id": 0},
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_global_layers=1, attention_heads=4, image_size=28,
                               patch_size=14, vision_output_dim=64,
                               intermediate_layers_indices=[0]),
            image_token_index=299)
    elif kind == "pixtral":
        config = LlavaConfig(
            vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=32,
                               patch_size=8, head_dim=8),
            text_config={**text, "model_type": "mistral"}, image_token_index=10,
            vision_feature_layer=-1, vision_feature_select_strategy="full")
    elif kind == "kosmos-2":
        config = Kosmos2Config(
            text_config=dict(embed_dim=64, layers=2, attention_heads=4, ffn_dim=128,
                             vocab_size=300),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=28, patch_size=14),
            latent_query_num=4)
    elif kind == "pix2struct":
        config = Pix2StructConfig(
            text_config=dict(hidden_size=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2,
                             vocab_size=300),
            vision_config=dict(hidden_size=64, d_ff=128, d_kv=16, num_attention_heads=4,
                               num_hidden_layers=2, patch_embed_hidden_size=3 * 8 * 8))
    else:
        config = Blip2Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=28, patch_size=14),
            qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, encoder_hidden_size=32,
                                vocab_size=300),
            text_config=dict(model_type="opt", hidden_size=64, ffn_dim=128,
                             num_hidden_layers=2, num_attention_heads=4, vocab_size=300,
                             word_embed_proj_dim=64),
            num_query_tokens=4, image_token_index=299)
    with accelerate.init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(config)
    materialize_random(model, torch.float32, torch.device("cpu"), 0)
    prompt = built_prompt(model.config, load_image("coffee"), np.array([[3, 4, 5]]),
                          torch.device("cpu"), torch.float32)
    with torch.no_grad():
        logits = model(**prompt.inputs).logits
        out = model.generate(**prompt.inputs, max_new_tokens=3, min_new_tokens=3,
                             do_sample=False)
        longer = torch.cat([prompt.input_ids, out[:, -3:]], dim=1)
        again = model(**prompt.with_ids(longer)).logits
    assert logits.shape[:2] == prompt.input_ids.shape
    assert again.shape[1] == prompt.input_ids.shape[1] + 3


IMAGE_COST = 64  # tokens the fake server counts for an image


@pytest.fixture
def vlm_server() -> Iterator[tuple[str, list[dict]]]:
    """An OpenAI-compatible chat server in a thread that counts an image content part as
    IMAGE_COST tokens and each whitespace-separated word as one (a real server's tokenizer
    is not needed to test what bench sends and how it sizes the prompt); it records every
    request's messages."""
    import asyncio
    import base64
    import json

    from aiohttp import web

    seen: list[dict] = []

    def prompt_tokens(messages: list[dict]) -> int:
        count = 0
        for part in messages[0]["content"] if isinstance(messages[0]["content"], list) else [
                {"type": "text", "text": messages[0]["content"]}]:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,")
                assert base64.b64decode(url.split(",", 1)[1])[:4] == b"\x89PNG"
                count += IMAGE_COST
            else:
                count += len(part["text"].split())
        return count

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        usage = {"prompt_tokens": prompt_tokens(body["messages"]),
                 "completion_tokens": body["max_tokens"]}
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"content": "w"},
                                                   "finish_reason": "length"}],
                                      "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(body["max_tokens"]):
            last = i == body["max_tokens"] - 1
            event = {"choices": [{"delta": {"content": "w "},
                                  "finish_reason": "length" if last else None}]}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            await asyncio.sleep(0.002)
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "fake-vlm"}]})

    app = web.Application(client_max_size=2**26)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    with serving(app) as url:
        yield url, seen


@pytest.mark.slow
def test_a_served_vlm_gets_the_image_in_every_request_and_a_prompt_sized_with_it(
        vlm_server: "tuple[str, list[dict]]", tmp_path: Path, cache_dir: Path) -> None:
    """engine=openai sends the workload's photograph as an image_url data URI in every chat
    request, learns what it costs from the server's own count, and sizes the text so that
    every timed request has the workload's prompt tokens after the image's."""
    url, seen = vlm_server
    results = tmp_path / "results"
    out = run_bench("model=tiny-vlm", "engine=openai", f"engine.url={url}", "engine.api=chat",
                    "eval=none", f"results_dir={results}", "report=false",
                    "workload.prompt_tokens=40", "workload.new_tokens=6",
                    "workload.repeats=3", "workload.min_duration_s=0",
                    "workload.warmup_until_steady=false", cwd=REPO, cache=cache_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    row = pd.concat([pd.read_parquet(p) for p in results.rglob("*.parquet")]).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["image_tokens"] == IMAGE_COST and row["prompt_tokens"] == 40 + IMAGE_COST
    assert row["decode_tok_s"] > 0 and row["ttft_ms"] > 0
    streamed = [b for b in seen if b.get("stream")]
    assert len(streamed) >= 3 + 1  # the timed requests and at least one warm-up
    for body in streamed:
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"]
        assert len(parts[1]["text"].split()) == 40


def test_a_blip2_with_random_weights_is_built_with_its_text_embeddings_tied() -> None:
    """transformers 5's Blip2Config holds `tie_word_embeddings` on its text config only
    (reading it on the composite raised): the synthetic model is built, its head one storage
    with the text model's input embeddings, as the checkpoint's is."""
    from transformers import AutoModelForImageTextToText, Blip2Config

    from bench.engines.hf.loading import build_synthetic
    from bench.sweep.plan import make_plan

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2)
    config = Blip2Config(
        vision_config={**small, "image_size": 32, "patch_size": 16},
        qformer_config={**small, "encoder_hidden_size": 32},
        text_config={"model_type": "opt", "hidden_size": 32, "ffn_dim": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 100,
                     "word_embed_proj_dim": 32},
        num_query_tokens=4)
    assert not hasattr(config, "tie_word_embeddings")  # the library's fact this guards
    assert config.get_text_config().tie_word_embeddings
    quant = make_plan(["model=tiny-llama", "quant=fp32", "eval=none"])[0].config.quant
    model = build_synthetic(config, AutoModelForImageTextToText, quant, torch.device("cpu"),
                            seed=0).model
    assert (model.get_output_embeddings().weight.data_ptr()
            == model.get_input_embeddings().weight.data_ptr())
