"""A fake Ollama: its OpenAI API (/v1/models, /v1/completions for bench's prompt sizing) and
the native answers bench reads (/api/version, /api/ps, streamed /api/generate), in the shapes
Ollama's docs/api.md documents. Each whitespace-separated word is one token."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Iterator

from tests.conftest import serving

MODEL = "llama3:latest"
SIZE_VRAM = 3_000_000_000  # half of the model on the GPU: Ollama offloads the rest


@contextlib.contextmanager
def serve_fake_ollama() -> Iterator[str]:
    from aiohttp import web

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"choices": [{"text": "w", "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": len(body["prompt"].split()),
                                            "completion_tokens": body["max_tokens"]}})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.5.7"})

    async def ps(request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": MODEL, "model": MODEL,
                                              "size": 2 * SIZE_VRAM, "size_vram": SIZE_VRAM,
                                              "digest": "365c0bd3c000"}]})

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["raw"] and body["options"]["temperature"] == 0
        n = body["options"]["num_predict"]
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for _ in range(n):
            await resp.write(json.dumps({"model": MODEL, "response": "w ",
                                         "done": False}).encode() + b"\n")
            await asyncio.sleep(0.002)
        final = {"model": MODEL, "response": "", "done": True, "done_reason": "length",
                 "total_duration": 30_000_000, "load_duration": 1_000_000,
                 "prompt_eval_count": len(body["prompt"].split()),
                 "prompt_eval_duration": 4_000_000, "eval_count": n,
                 "eval_duration": 2_000_000 * n}
        await resp.write(json.dumps(final).encode() + b"\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/generate", generate)
    with serving(app) as url:
        yield url
