"""The prompt a server's requests carry: a window of bench's fixed real text (the MMLU
questions the quality measure reads) whose length is exactly the workload's prompt tokens by
the server's own count. Servers do not all take token ids (llama-cpp-python's does not), so
the window is found by bisection with one-token requests, before anything is timed, and
checked on request numbers of every width."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from bench.engines.openai.client import Client, ServerError

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

MARKER_DIGITS = 6


def marker(k: int) -> str:
    """Request k's number, least significant digit first."""
    return f"{k:0{MARKER_DIGITS}d}"[::-1] + ". "


async def prompt_window(client: Client, cfg: "BenchConfig") -> tuple[str, Optional[int]]:
    """(the window of the fixed text that makes a prompt of exactly prompt_tokens tokens by
    the server's count, what the workload's image adds to every prompt by its count)."""
    from bench.data.text import text

    source = " ".join(text(cfg.resolved_cache_dir).split())
    head = marker(0)
    image_tokens = None
    if client.image_url is not None:  # what the image adds, by the server's count
        image_tokens = (await client.prompt_tokens(head) -
                        await client.prompt_tokens(head, image=False))
    target = cfg.workload.prompt_tokens + (image_tokens or 0)

    async def count(chars: int) -> int:
        return await client.prompt_tokens(head + source[:chars])

    shortest = await count(0)
    if shortest > target:
        raise ServerError(f"the server counts {shortest} tokens for a prompt of the request "
                          f"number alone (its chat template included): workload."
                          f"prompt_tokens={target} is too few for it")
    lo, hi = 0, min(len(source), 8 * target)
    while await count(hi) < target:
        if hi == len(source):
            raise ServerError(f"bench's text is too short for a {target}-token prompt")
        hi = min(len(source), 2 * hi)
    while lo < hi:  # the shortest window reaching the target
        mid = (lo + hi) // 2
        if await count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    for chars in range(hi, hi + 8):
        if await count(chars) == target:
            base = source[:chars]
            break
    else:
        raise ServerError(f"no window of bench's text is exactly {target} tokens by the "
                          f"server's count")
    for k in (1, 47, 90_001, 999_999):
        seen = await client.prompt_tokens(marker(k) + base)
        if seen != target:
            raise ServerError(f"the server counts {seen} prompt tokens for request "
                              f"{k}'s prompt, not {target}")
    return base, image_tokens
