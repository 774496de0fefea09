"""engine=openai: servers measured from the outside, under concurrency, and their failures.

Real servers only: llama-cpp-python's OpenAI-compatible server (installed with bench's
llamacpp extra) on the tiny model's GGUF file, and vLLM where its environment exists.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.engines.openai.client import Streamed
from bench.engines.openai.served import _timing
from bench.engines.openai.server import VLLM_VENV_PYTHON
from bench.meters.host_peaks import _vm_hwm_bytes
from tests.conftest import FAST, assert_written_nowhere, run_bench

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves these out

EVAL = ["eval=offline", "eval.mmlu=invented", "eval.mmlu_limit=null", "eval.mmlu_cloze=false",
        "eval.humaneval_limit=2", "eval.quality_chunks=2", "eval.quality_chunk_tokens=128"]


def _rows(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results)


def _servers_left(port: int) -> list[str]:
    """Command lines of processes still serving on `port` (bench's servers say --port P)."""
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if f"--port {port}" in cmd:
            left.append(cmd)
    return left


def _port(server: str) -> int:
    return int(server.split("127.0.0.1:")[1].split()[0])


def test_a_started_llamacpp_server_under_concurrency_1_2_4(tmp_path: Path,
                                                           cache_dir: Path) -> None:
    """The issue's done-when: one cell and a concurrency sweep through engine=openai on the
    tiny model, exact token counts, TTFT and gaps, the server's memory, no server left, and
    the echo-logprob self-test refusing this server's log-likelihoods with its reason."""
    results = tmp_path / "results"
    proc = run_bench("-m", "engine=llamacpp-server", "model=tiny-llama", "quant=gguf-q8_0",
                     "workload.concurrency=1,2,4", *FAST, *EVAL, f"results_dir={results}",
                     f"reports_dir={tmp_path / 'reports'}", "run_id=serving", cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _rows(results).set_index("concurrency").sort_index()
    assert list(df.index) == [1, 2, 4]
    assert (df.status == "ok").all(), df[["status", "error"]]
    assert (df.engine == "openai").all()
    assert df.engine_version.str.startswith("llama-cpp-python ").all()
    assert df.server.str.contains("llama_cpp at http://127.0.0.1:").all()
    # exact workloads: every request generated new_tokens tokens, none failed
    assert (df.tokens_short == 0).all() and (df.request_errors == 0).all()
    for n, row in df.iterrows():
        assert row.requests >= 3 * n  # each client made `repeats` requests at least
        assert len(row.decode_tok_s_samples) == row.requests
        assert row.ttft_ms > 0 and row.ttft_ms_p90 >= row.ttft_ms
        assert 0 < row.itl_ms_p50 <= row.itl_ms_p90 <= row.itl_ms_p99
        assert row.throughput_tok_s > 0 and row.requests_per_s > 0
        assert row.e2e_ms_p50 > row.ttft_ms
    # llama-cpp-python's server answers one request at a time: queueing shows in the TTFT
    assert df.loc[4, "ttft_ms"] > 2 * df.loc[1, "ttft_ms"]
    # the server's process tree, not the client: its weights and more
    assert (df.peak_host_rss_bytes > df.weights_bytes).all()
    assert (df.peak_host_rss_load_bytes > 20 * 2**20).all()
    assert (df.host_pss_bytes > 20 * 2**20).all() and (df.client_cpu_s > 0).all()
    for server, log in zip(df.server, df.server_log, strict=True):
        assert not _servers_left(_port(server)), server
        assert "llama_cpp.server" in Path(log).read_text()
    # accuracy through the server: generation works, log-likelihoods are refused
    first = df.loc[1]
    assert first.humaneval_n == 2 and pd.isna(first.mmlu_acc)
    assert "disagree with its own generation" in first.eval_note
    assert "issue 1983" in first.eval_note and "max" in first.loglik_check
    assert "whole distribution" in first.quality_note and pd.isna(first.kld_mean)
    report = (tmp_path / "reports" / "serving.md").read_text()
    lines = [line for line in report.splitlines() if line.startswith("| tiny-llama")]
    assert len(lines) == 3 and all("openai:llama_cpp" in line for line in lines)


FAILING_SERVERS = {
    # starts, never answers
    "never-healthy": "#!/bin/sh\nexec sleep 600\n",
    # the real server, killed at its 18th completion request: bisecting the prompt length
    # takes about 14, the speed phase's warm-up and timed requests follow (mid-cell)
    "dies": f"""#!{sys.executable}
import subprocess, sys

server = subprocess.Popen([{sys.executable!r}, *sys.argv[1:]], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
seen = 0
for line in server.stdout:
    print(line, end="", flush=True)
    seen += "POST /v1/completions" in line
    if seen == 18:
        print("test: killing the server now", flush=True)
        server.kill()
        sys.exit(3)
""",
}


def test_a_server_that_fails_leaves_an_error_row_and_the_sweep_goes_on(
        tmp_path: Path, cache_dir: Path) -> None:
    scripts = []
    for name, text in FAILING_SERVERS.items():
        script = tmp_path / name
        script.write_text(text)
        script.chmod(0o755)
        scripts.append(str(script))
    results = tmp_path / "results"
    common = ["engine=llamacpp-server", "model=tiny-llama", "quant=gguf-q8_0", "eval=none",
              *FAST, f"results_dir={results}", f"reports_dir={tmp_path / 'reports'}",
              "run_id=failing"]
    proc = run_bench("-m", f"engine.server_python={scripts[1]},{sys.executable}", *common,
                     cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_bench(f"engine.server_python={scripts[0]}", "engine.startup_timeout_s=5",
                     *common, cwd=tmp_path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a server that refuses its arguments, in the same run
    proc = run_bench(*common, "engine.server_args=[--n_ctx,lots]", cwd=tmp_path,
                     cache=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _rows(results)
    by_python = df.set_index(df.config_yaml.str.extract(r"server_python: (\S+)")[0].fillna(
        "args"))
    never = by_python.loc[scripts[0]]
    assert never.status == "error"
    assert "did not become healthy within engine.startup_timeout_s=5" in never.error
    dies = by_python.loc[scripts[1]]
    assert dies.status == "error" and "exited with code 3" in dies.error, dies.error
    assert "test: killing the server now" in dies.error_detail  # the log's last lines
    good = by_python.loc[sys.executable]
    assert good.status == "ok" and good.decode_tok_s > 0  # the sweep went on
    bad_args = df[df.config_yaml.str.contains("- lots")].iloc[0]  # in server_args' list
    assert bad_args.status == "error" and "exited with code" in bad_args.error
    assert "lots" in bad_args.error_detail
    for proc in psutil.process_iter(["cmdline"]):  # nothing bench started is left
        cmd = " ".join(proc.info["cmdline"] or [])
        assert "sleep 600" not in cmd and str(tmp_path) not in cmd, cmd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_attached_server_is_measured_and_left_running(tmp_path: Path,
                                                         cache_dir: Path) -> None:
    results = tmp_path / "results"
    common = ["model=tiny-llama", "quant=gguf-q8_0", "eval=none", *FAST,
              f"results_dir={results}", f"reports_dir={tmp_path / 'reports'}", "run_id=attach"]
    proc = run_bench("engine=llamacpp", *common, cwd=tmp_path, cache=cache_dir)  # the file
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = max(Path(cache_dir, "gguf").glob("tiny-llama-*/Q8_0.gguf"),
               key=lambda p: p.stat().st_mtime)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(path),
                               "--host", "127.0.0.1", "--port", str(port),
                               "--interrupt_requests", "False"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        hwm = _vm_hwm_bytes(str(server.pid))
        # credentials in the URL (basic auth) and an API key from the environment (bearer):
        # the server ignores both; neither may reach a file
        password, key = f"pw{uuid.uuid4().hex}", f"sk-{uuid.uuid4().hex}"
        attach = ["engine=openai", f"engine.url=http://bench:{password}@127.0.0.1:{port}",
                  *common]
        proc = run_bench(*attach, "workload.concurrency=2", cwd=tmp_path, cache=cache_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert password not in proc.stdout + proc.stderr
        assert server.poll() is None  # bench does not stop a server it did not start
        assert (_vm_hwm_bytes(str(server.pid)) or 0) >= (hwm or 0)  # nor resets its peak
        chat = ["engine=openai", f"engine.url=http://127.0.0.1:{port}", *common]
        chat = [arg.replace("prompt_tokens=16", "prompt_tokens=64") for arg in chat]
        proc = subprocess.run([sys.executable, "-m", "bench", *chat, "engine.api=chat",
                               "engine.api_key_env=BENCH_TEST_API_KEY"], cwd=tmp_path,
                              env={**os.environ, "BENCH_CACHE": str(cache_dir),
                                   "BENCH_TEST_API_KEY": key}, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.kill()
        server.wait()
    assert_written_nowhere([password, key], [tmp_path, cache_dir / "servers"])
    rows = _rows(results)
    chat = rows[rows.config_yaml.str.contains("api: chat")].iloc[0]
    assert chat.status == "ok" and chat.tokens_short == 0, chat.error  # chat completions
    row = rows[(rows.engine == "openai") & ~rows.config_yaml.str.contains("api: chat")].iloc[0]
    assert row.status == "ok", row.error
    assert row.server.startswith(f"attached: http://127.0.0.1:{port}")
    assert row.concurrency == 2 and row.tokens_short == 0
    # not bench's processes: their memory is not measured, and the row says why
    assert pd.isna(row.peak_host_rss_bytes) and "did not start" in row.memory_note


def test_a_stream_becomes_timings_with_the_servers_count_and_its_own_clock() -> None:
    """The token count is the server's word (usage, else finish_reason=length), never the
    chunks; llama-server's own `timings` (its documented fields) go beside bench's clock."""
    stream = Streamed(sent_s=10.0, chunk_s=(10.1, 10.2, 10.4), done_s=10.45, text="a b c",
                      finish_reason="length", completion_tokens=None, prompt_tokens=None,
                      server_timings={"prompt_n": 16, "prompt_ms": 80.0, "predicted_n": 4,
                                      "predicted_ms": 300.0})
    timing = _timing(stream, new_tokens=4)
    assert timing.tokens == 4  # it stopped at max_tokens: 4, though 3 chunks came
    assert timing.ttft_s == pytest.approx(0.1) and timing.decode_s == pytest.approx(0.3)
    assert timing.token_intervals_s == pytest.approx((0.1, 0.2))
    assert timing.e2e_s == pytest.approx(0.45)
    assert timing.engine_prefill_s == pytest.approx(0.08) and timing.engine_decode_tokens == 4
    usage = dataclasses.replace(stream, completion_tokens=2, finish_reason="stop")
    assert _timing(usage, new_tokens=4).tokens == 2
    early = dataclasses.replace(stream, finish_reason="stop")
    assert _timing(early, new_tokens=4, counted=2).tokens == 2  # its tokenizer's count


@pytest.mark.skipif(not VLLM_VENV_PYTHON.exists(),
                    reason=f"vLLM's environment is missing ({VLLM_VENV_PYTHON}): `make vllm` "
                           f"builds it (~3.4 GB); this test runs vLLM when it exists")
def test_vllm_serves_smollm2_and_its_log_likelihoods_pass_the_self_test(
        tmp_path: Path, cache_dir: Path) -> None:
    results = tmp_path / "results"
    proc = run_bench("-m", "engine=vllm", "model=smollm2-135m", "weights=packaged",
                     "quant=fp32", "workload.concurrency=1,4", *FAST, *EVAL,
                     "eval.humaneval_limit=1", f"results_dir={results}",
                     f"reports_dir={tmp_path / 'reports'}", "run_id=vllm", cwd=tmp_path,
                     cache=cache_dir, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = _rows(results).set_index("concurrency").sort_index()
    assert (df.status == "ok").all(), df[["status", "error"]]
    assert df.engine_version.str.startswith("vllm").all()
    assert (df.tokens_short == 0).all() and (df.server_kv_cache_tokens > 0).all()
    assert (df.server_max_concurrency > 1).all()
    # vLLM batches concurrent requests: four clients get more tokens/s than one
    assert df.loc[4, "throughput_tok_s"] > 1.5 * df.loc[1, "throughput_tok_s"]
    first = df.loc[1]
    assert first.mmlu_n == 96 and 0 <= first.mmlu_acc <= 1, first.eval_note
    assert "median |diff| 0.0" in first.loglik_check
    for server in df.server:
        assert not _servers_left(_port(server)), server
