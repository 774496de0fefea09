"""Streams that break, leftovers of killed builds, foreign files and private helpers: each a
failure with its reason, never a traceback, a silent success or a file left for ever."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from bench.core.atomic import staged_dir
from bench.engines.openai.client import Client, ServerError
from bench.results.store import read_results
from tests.conftest import FAST, run_bench, serving
from tests.report_rows import write

# What a misbehaving server sends for POST /v1/completions (stream=true), by name
A = b'data: {"choices": [{"text": "a"}]}\n\n'
STREAMS = {
    "not-utf8": [A, b'data: {"choices": [{"text": "\xff\xfe"}]}\n\n'],
    "cut-short": [A, b'data: {"choices": [{"text": "b"}]}\n\n'],
    "not-json": [b'data: {"choices": [\n\n'],
    "not-an-object": [b"data: [1, 2]\n\n"],
    "hangs": [b'data: {"choices": [{"text": "a"}]}\n\n', None],  # None: no more bytes, ever
    "good": [b'data: {"choices": [{"text": "a"}]}\n\n',
             b'data: {"choices": [{"text": "b", "finish_reason": "length"}]}\n\n',
             b"data: [DONE]\n\n"],
}
WHY = {"not-utf8": "not UTF-8", "cut-short": "without [DONE] or a finish_reason",
       "not-json": "JSONDecodeError", "not-an-object": "not an event object",
       "hangs": "engine.request_timeout_s=1"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real HTTP server in a thread that answers with the stream the model name asks for."""
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in STREAMS[body["model"]]:
            if part is None:
                await asyncio.sleep(30)
            else:
                await resp.write(part)
        return resp

    async def tokenize(request: web.Request) -> web.Response:
        return web.json_response({"model": "x"})  # no count in the answer

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/tokenize", tokenize)
    with serving(app) as url:
        yield url


@pytest.mark.parametrize("kind", sorted(WHY))
def test_a_broken_stream_is_a_failed_request_with_its_reason(server: str, kind: str) -> None:
    client = Client(server, "completions", timeout_s=1.0)
    client.model = kind
    try:
        with pytest.raises(ServerError) as failure:
            client.run(client.stream("prompt", 2))
    finally:
        client.close()
    assert WHY[kind] in str(failure.value), failure.value
    assert not str(failure.value).rstrip().endswith(":")  # never an empty reason


def test_a_good_stream_and_a_tokenizer_without_a_count(server: str) -> None:
    client = Client(server, "completions", timeout_s=5.0)
    client.model = "good"
    try:
        streamed = client.run(client.stream("prompt", 2))
        assert streamed.text == "ab" and streamed.finish_reason == "length"
        assert client.run(client.count_tokens("some text")) is None  # unknown, not 0
    finally:
        client.close()


_BUILDER = """
import sys, time
from pathlib import Path
from bench.core.atomic import staged_dir
with staged_dir(Path(sys.argv[1]), "done") as work:
    (work / "half").write_text("x")
    print("building", flush=True)
    time.sleep(60)
"""


def test_a_killed_builds_staging_folder_is_removed_on_the_next_start(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "tiny" / "entry"
    proc = subprocess.Popen([sys.executable, "-c", _BUILDER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "building"
    proc.kill()
    proc.wait()
    left = [p for p in target.parent.iterdir() if p.name.startswith(".entry.")]
    assert len(left) == 1 and (left[0] / "half").exists()
    time.sleep(1.1)  # a pid reused by a newer process would be newer than the folder
    with staged_dir(target, "done") as work:
        (work / "done").write_text("ok")
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry"]


def test_a_foreign_file_whose_status_is_a_number_is_skipped(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    write(results, quant="fp16", decode_tok_s=10.0)
    foreign = results / "other" / "foreign.parquet"
    foreign.parent.mkdir()
    pq.write_table(pa.table({"cell_id": ["x"], "run_id": ["r"], "status": [1]}), foreign)
    df = read_results(results)
    assert list(df.status) == ["ok"]
    err = capsys.readouterr().err
    assert "foreign.parquet" in err and "status is int64" in err


@pytest.mark.slow
def test_a_synthetic_llamacpp_cell_runs(tmp_path: Path, cache_dir: Path) -> None:
    """bench writes the GGUF of a synthetic architecture itself (no private transformers
    helper: 5.24 removed the one it used)."""
    results = tmp_path / "results"
    proc = run_bench(*FAST, "model=tiny-llama", "weights=synthetic", "engine=llamacpp",
                     "quant=gguf-q8_0", "eval=none", f"results_dir={results}", "report=false",
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_parquet(results).iloc[0]
    assert row.status == "ok", row.error
    assert row.engine == "llamacpp" and row.weights == "synthetic" and row.decode_tok_s > 0
