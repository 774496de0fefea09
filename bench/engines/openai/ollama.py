"""What an Ollama server knows that its OpenAI API hides, read through its native API.

- `/api/ps`: each loaded model's `size` and `size_vram` (bytes): how much of the model sits
  on the GPU. size_vram below size means Ollama offloads part of it to the CPU, which its
  OpenAI API never says.
- `/api/generate` (streamed, one JSON object per line): the final object carries Ollama's own
  timings, `prompt_eval_count` / `prompt_eval_duration` and `eval_count` / `eval_duration`
  (nanoseconds), the split llama.cpp's server gives as `timings`.

bench sends an attached Ollama's timed requests through /api/generate (raw prompt, greedy,
`num_predict` tokens), so the row carries both the client's and Ollama's figures. Shapes as
documented in Ollama's docs/api.md; not yet verified against a live Ollama (none can be
installed on bench's development machine).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from bench.engines.openai.client import Client, Streamed

NS_PER_MS = 1e6


def is_ollama(version: Optional[str]) -> bool:
    """What _server_version found: Ollama answers /api/version."""
    return bool(version) and str(version).startswith("api/version")


def loaded_sizes(payload: Any, model: Optional[str]) -> dict[str, int]:
    """The served model's `size` and `size_vram` from /api/ps (by name or model tag)."""
    for entry in (payload or {}).get("models") or []:
        if model is None or model in (entry.get("name"), entry.get("model")):
            out = {}
            if isinstance(entry.get("size"), int):
                out["server_size_bytes"] = entry["size"]
            if isinstance(entry.get("size_vram"), int):
                out["server_size_vram_bytes"] = entry["size_vram"]
            return out
    return {}


def timings(final: dict[str, Any]) -> Optional[dict[str, float]]:
    """Ollama's counts and durations in llama-server's `timings` names (ms)."""
    keys = ("prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration")
    if not all(isinstance(final.get(k), (int, float)) for k in keys):
        return None
    return {"prompt_n": final["prompt_eval_count"],
            "prompt_ms": final["prompt_eval_duration"] / NS_PER_MS,
            "predicted_n": final["eval_count"],
            "predicted_ms": final["eval_duration"] / NS_PER_MS}


def generate_body(model: Optional[str], prompt: str, new_tokens: int,
                  seed: int) -> dict[str, Any]:
    """Greedy, exactly `new_tokens` (num_predict), the prompt as it is (raw: no template)."""
    return {"model": model, "prompt": prompt, "raw": True, "stream": True,
            "options": {"num_predict": new_tokens, "temperature": 0, "top_k": 1,
                        "seed": seed}}


async def sizes(client: "Client") -> dict[str, int]:
    """The model's place in memory by Ollama's word; {} where /api/ps does not answer."""
    try:
        status, body, _ = await client.get("/api/ps", 10.0)
    except Exception:  # an older Ollama, or none: the columns stay null
        return {}
    return loaded_sizes(json.loads(body), client.model) if status == 200 else {}


async def stream(client: "Client", prompt: str, new_tokens: int, seed: int) -> "Streamed":
    """One /api/generate request, streamed: every text chunk timestamped, the final
    object's counts kept. A broken stream is a ServerError, as for the OpenAI API."""
    import aiohttp

    from bench.engines.openai.client import ServerError, Streamed

    chunks: list[float] = []
    parts: list[str] = []
    final: dict[str, Any] = {}
    sent = time.perf_counter()
    try:
        async with client.session.post(client.base_url + "/api/generate",
                                       json=generate_body(client.model, prompt, new_tokens,
                                                          seed)) as resp:
            if resp.status != 200:
                raise ServerError(f"POST /api/generate answered HTTP {resp.status}: "
                                  f"{(await resp.text())[:300]}")
            async for raw in resp.content:
                line = raw.strip()
                if not line:
                    continue
                now = time.perf_counter()
                event = json.loads(line.decode("utf-8"))
                if "error" in event:
                    raise ServerError(f"Ollama's stream says: {event['error']}")
                if event.get("response"):
                    chunks.append(now)
                    parts.append(event["response"])
                if event.get("done"):
                    final = event
                    break
    except (aiohttp.ClientError, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ServerError(f"streaming /api/generate failed: {type(exc).__name__}: "
                          f"{exc or 'no detail'}") from exc
    if not final:
        raise ServerError(f"streaming /api/generate: the stream ended after {len(chunks)} "
                          f"chunks without done: the server cut it short")
    count = final.get("eval_count")
    return Streamed(sent_s=sent, chunk_s=tuple(chunks), done_s=time.perf_counter(),
                    text="".join(parts), finish_reason=final.get("done_reason"),
                    completion_tokens=count if isinstance(count, int) else None,
                    prompt_tokens=None, server_timings=timings(final))
