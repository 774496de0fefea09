"""Bad input is refused before any work: exit 2, one line naming the key (and the valid
choices where there are some), no row written. One table; every entry really runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench import app
from bench.core.config import PATH_NAME_KEYS
from bench.core.paths import PathEscape, under
from tests.conftest import REPO, run_bench

TINY = ["model=tiny-llama", "eval=none"]

# (arguments of `python -m bench`, words the one line must contain)
CASES: list[tuple[list[str], list[str]]] = [
    (["model=nope"], ["model=nope", "valid choices", "smollm2-135m"]),
    (["quant=fp32,nope"], ["quant=nope", "valid choices", "bnb-nf4"]),
    (["gpu=rtx9090"], ["gpu=rtx9090", "rtx4090-24gb"]),
    (["engine=tgi"], ["engine=tgi", "llamacpp"]),
    ([*TINY, "engine=openai"], ["engine=openai", "engine.server", "engine.url"]),
    ([*TINY, "engine=openai", "engine.server=tgi"],
     ["engine.server", "llama_cpp, llama_server, vllm"]),
    ([*TINY, "engine=openai", "engine.url=localhost:8000"], ["engine.url", "http://"]),
    ([*TINY, "engine=vllm", "quant=gguf-q4_0"], ["engine.server=vllm", "gguf-q4_0"]),
    ([*TINY, "engine=vllm", "weights=synthetic"], ["weights=synthetic", "engine.server=vllm"]),
    ([*TINY, "engine=vllm", "engine.n_batch=8"], ["engine.n_batch", "vllm"]),
    ([*TINY, "engine=hf", "engine.server=vllm"], ["engine.server", "engine=hf", "openai"]),
    ([*TINY, "engine=openai", "engine.server=llama_cpp", "engine.api=grpc"],
     ["engine.api", "completions, chat"]),
    ([*TINY, "quant=gguf-q4_0", "workload.concurrency=2"],
     ["workload.concurrency=2", "engine=llamacpp", "engine=openai"]),
    ([*TINY, "workload.concurrency=0"], ["workload.concurrency", "> 0"]),
    (["eval=bogus"], ["eval=bogus", "offline"]),
    (["+sweep=nope"], ["sweep=nope", "llama2"]),
    (["weights=bogus"], ["weights", "real, synthetic, tiny, packaged"]),
    (["model=tiny-llama", "weights=packaged"], ["weights=packaged", "model.package"]),
    (["model=llama2-7b", "weights=tiny"], ["weights=tiny", "tiny models"]),
    ([*TINY, "workload.repeats=1"], ["workload.repeats", ">= 3"]),
    ([*TINY, "workload.batch_size=abc"], ["workload.batch_size"]),
    ([*TINY, "workload.new_tokens=1"], ["workload.new_tokens", ">= 2"]),
    ([*TINY, "workload.prompt_tokens=-5"], ["workload.prompt_tokens", "> 0"]),
    ([*TINY, "workload.prompt_tokens=4000"], ["workload.prompt_tokens=4000",
                                              "max_position_embeddings=2048"]),
    ([*TINY, "workload.min_duration_s=nan"], ["workload.min_duration_s", "finite"]),
    ([*TINY, "workload.cuda_clock=tsc"], ["workload.cuda_clock", "events, sync"]),
    ([*TINY, "workload.max_warmup_runs=0", "workload.warmup_runs=2"],
     ["workload.max_warmup_runs", ">= workload.warmup_runs"]),
    ([*TINY, "workload.steady_tolerance=0"], ["workload.steady_tolerance", "> 0"]),
    ([*TINY, "cell.device=tpu"], ["cell.device", "auto, cpu, cuda"]),
    ([*TINY, "cell.timeout_s=inf"], ["cell.timeout_s", "finite"]),
    ([*TINY, "cell.timeout_s=0"], ["cell.timeout_s", "> 0"]),
    ([*TINY, "seed=abc"], ["seed"]),
    ([*TINY, "quant.nonsense=1"], ["quant.nonsense"]),
    ([*TINY, "quant=["], ["malformed override"]),
    ([*TINY, "offload=true", "cell.device=cpu"], ["offload=true", "cell.device=cpu"]),
    ([*TINY, "offload=true", "quant=gptq-int4"], ["offload=true", "gptq"]),
    ([*TINY, "engine=llamacpp", "quant=bnb-nf4"], ["engine=llamacpp", "gguf-q4_k_m"]),
    ([*TINY, "engine=hf", "quant=gguf-q4_k_m"], ["engine=hf", "bnb-nf4"]),
    ([*TINY, "quant=gguf-q4_0", "workload.batch_size=2"], ["workload.batch_size=2"]),
    ([*TINY, "quant=fp32", "engine.n_gpu_layers=3"], ["engine.n_gpu_layers", "llamacpp"]),
    ([*TINY, "engine=llamacpp", "quant=gguf-q4_0", "engine.n_batch=0"], ["engine.n_batch", "> 0"]),
    ([*TINY, "quant=gguf-q4_0", "quant.bits=5"], ["quant.bits=5", "Q4_0"]),
    (["model=tiny-llama", "eval=offline", "eval.allow_code_execution=false"],
     ["eval.humaneval=true", "eval.allow_code_execution=true"]),
    (["model=tiny-llama", "eval=offline", "eval.mmlu=bogus"], ["eval.mmlu", "offline, hub"]),
    (["model=tiny-llama", "eval=offline", "eval.mmlu_shots=9"], ["eval.mmlu_shots=9", "0..5"]),
    (["model=tiny-llama", "eval=offline", "eval.quality_chunks=0"], ["eval.quality_chunks"]),
    (["model=tiny-llama", "eval=offline", "eval.mmlu_subjects=[anatomy,physics]"],
     ["eval.mmlu_subjects='physics'", "abstract_algebra, anatomy"]),
    (["model=tiny-llama", "eval=quick", "eval.mmlu_subjects=[anatomy]"],
     ["eval.mmlu_subjects", "eval.mmlu=offline"]),
    (["model=tiny-llama", "eval=none", "eval.quality=true"], ["eval.name=none"]),
    (["model=smollm2-135m", "model.package.sha256=abc", "eval=none"],
     ["model.package.sha256"]),
    ([*TINY, "run_id=../escape"], ["run_id", "letters, digits"]),
    ([*TINY, "run_id=" + "r" * 300], ["run_id", "at most 100"]),
    ([*TINY, "model=tiny-llama"], ["model is given twice", "give it once"]),
    ([*TINY, "quant=fp32", "quant.bits=32", "quant.bits=16"], ["quant.bits is given twice"]),
    ([*TINY, "engine=openai", "engine.url=http://127.0.0.1:99999"], ["engine.url", "port"]),
    ([*TINY, "engine=openai", "engine.url=http://:8000"], ["engine.url", "names no host"]),
    ([*TINY, "engine=openai", "engine.url='http://a b:8000'"], ["engine.url", "space"]),
    ([*TINY, "engine=openai", "engine.url='http://h:80/v1?x=1'"], ["engine.url", "query"]),
    ([*TINY, "engine=openai", "engine.url=http://h:80/v1?x=1"],
     ["malformed override", "engine.url", "quote"]),
    ([*TINY, "engine=openai", "engine.url=ftp://h:21"], ["engine.url", "http://"]),
    ([*TINY, "engine=openai", "engine.url=http://h:8000",
      "engine.api_key_env=BENCH_NO_SUCH_VARIABLE"], ["engine.api_key_env", "is not set"]),
    ([*TINY, "engine=openai", "engine.url=http://h:8000", "engine.api_key_env='sk-123'"],
     ["engine.api_key_env", "name of an environment variable"]),
    ([*TINY, "engine=llamacpp-server", "engine.api_key_env=HOME"],
     ["engine.api_key_env", "engine.url"]),
    ([*TINY, "reports_dir="], ["reports_dir is empty"]),
    # image tasks: which engine, scheme, device and workload keys a pipeline takes
    (["model=tiny-sd", "eval=none", "engine=hf"], ["engine=hf", "text-to-image", "diffusion"]),
    (["model=tiny-sd", "eval=none", "engine=llamacpp"], ["engine=llamacpp", "diffusion"]),
    (["model=tiny-sd", "eval=none", "quant=gguf-q4_0"], ["quant=gguf-q4_0", "text-to-image"]),
    (["model=tiny-sd", "eval=none", "quant=gptq-int4", "engine=diffusion"],
     ["engine=diffusion", "quant=gptq-int4", "torchao"]),
    (["model=tiny-sd", "eval=none", "quant=bnb-nf4", "cell.device=cpu"],
     ["quant=bnb-nf4", "needs a GPU", "cell.device=cpu"]),
    (["model=tiny-sd", "eval=none", "engine=diffusion", "engine.offload=model", "cell.device=cpu"],
     ["engine.offload=model", "cell.device=cpu"]),
    (["model=tiny-sd", "eval=none", "engine=diffusion", "engine.offload=disk"],
     ["engine.offload", "sequential"]),
    (["model=tiny-sd", "eval=none", "workload.height=100"], ["workload.height=100", "8"]),
    (["model=tiny-svd", "eval=none", "workload.image=lena"], ["workload.image", "astronaut"]),
    (["model=tiny-sd", "eval=none", "workload.frames=8"], ["workload.frames", "image-to-video"]),
    ([*TINY, "workload.steps=20"], ["workload.steps", "text-to-image"]),
    (["model=tiny-sd", "eval=none", "model.resolution=[16,12]"], ["model.resolution"]),
    (["model=tiny-vlm", "eval=none", "quant=gptq-int4"], ["quant=gptq-int4", "vision-language"]),
    (["model=tiny-vlm", "eval=none", "quant=hqq-int4"], ["quant=hqq-int4", "bnb, torchao"]),
    (["model=tiny-vlm", "eval=none", "engine=diffusion"], ["engine=diffusion", "hf"]),
    (["model=tiny-vlm", "eval=none", "engine=llamacpp"], ["engine=llamacpp", "mmproj", "hf"]),
    (["model=tiny-vlm", "eval=none", "engine=openai", "engine.url=http://h:8000"],
     ["engine.api=chat", "image_url", "engine.api=completions"]),
    (["model=tiny-vlm", "eval=none", "engine=openai", "engine.server=llama_cpp",
      "engine.api=chat"], ["engine.server=llama_cpp", "mmproj", "vllm"]),
    (["model=tiny-vlm", "eval=none", "workload.steps=4"], ["workload.steps", "text-to-image"]),
]

# Every key whose value becomes part of a file name, given a value that would escape its
# folder: refused by the one rule (bench.core.paths.name_problem) before any work.
PATH_ESCAPES = [[*TINY, f"{key}=../../escape"] for key in PATH_NAME_KEYS] + [
    ["model=smollm2-135m", "eval=none", "model.package.file=../../escape.gguf"],
    ["model=smollm2-135m", "eval=none", "model.package.files.0.member=../../../escape"],
    ["model=smollm2-135m", "eval=none", "model.package.files.0.dist=../x"],
    ["model=smollm2-135m", "eval=none", "model.package.files.0.version=1/../../x"],
]


def _paths_case(tmp_path: Path, key: str, kind: str) -> tuple[list[str], list[str]]:
    """An output directory that cannot take files."""
    if kind == "a regular file":
        target = tmp_path / "a-file"
        target.write_text("not a directory")
        return [f"{key}={target}"], [key, "is a file, not a directory"]
    if kind == "/proc":
        return [f"{key}=/proc/bench-output"], [key, "/proc/bench-output", "cannot take files"]
    if kind == "a symlink loop":
        (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
        (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
        return [f"{key}={tmp_path / 'loop-a' / 'out'}"], [key, "cannot"]
    if os.geteuid() == 0:  # permission bits do not stop root: a filesystem that refuses
        return [f"{key}=/sys/bench-output"], [key, "cannot take files"]
    target = tmp_path / "read-only" / "sub"
    target.parent.mkdir()
    target.parent.chmod(0o555)
    return [f"{key}={target}"], [key, "cannot take files"]


def _only_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _no_rows(where: Path) -> None:
    assert not list(where.rglob("*.parquet")) if where.exists() else True


@pytest.mark.parametrize("args", PATH_ESCAPES, ids=[a[-1] for a in PATH_ESCAPES])
def test_no_configured_name_escapes_its_folder(args: list[str], tmp_path: Path, capsys) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    code = app.main([*args, f"results_dir={results}", f"cache_dir={cache}"])
    line = _only_line(capsys.readouterr().err)
    key = args[-1].split("=")[0]
    assert code == 2 and key in line, line
    assert not cache.exists() and not (tmp_path / "escape").exists()
    _no_rows(results)


def test_a_derived_path_that_leaves_its_root_is_refused(tmp_path: Path) -> None:
    """The second line of defence: a path is resolved (links followed) before use."""
    root = tmp_path / "cache"
    (root / "gguf").mkdir(parents=True)
    (root / "gguf" / "link").symlink_to(tmp_path)  # a link out of the cache
    assert under(root, "gguf", "x") == (root / "gguf" / "x").resolve()
    for parts in (("gguf", "..", "..", "x"), ("gguf", "link", "x"), ("/etc/passwd",)):
        with pytest.raises(PathEscape):
            under(root, *parts)


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_overrides_are_one_line_before_any_work(args: list[str], words: list[str],
                                                    tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    code = app.main([*args, f"results_dir={results}"])
    line = _only_line(capsys.readouterr().err)
    assert code == 2 and line.startswith("bench: error: ")
    for word in words:
        assert word in line, line
    _no_rows(results)


@pytest.mark.parametrize("key", ["results_dir", "reports_dir", "cache_dir"])
@pytest.mark.parametrize("kind", ["a regular file", "/proc", "read-only", "a symlink loop"])
def test_an_unusable_output_directory_is_refused_before_any_work(
        key: str, kind: str, tmp_path: Path, capsys) -> None:
    args, words = _paths_case(tmp_path, key, kind)
    results = tmp_path / "results"
    extra = [] if key == "results_dir" else [f"results_dir={results}"]
    code = app.main([*TINY, "quant=fp32", *extra, *args])
    line = _only_line(capsys.readouterr().err)
    assert code == 2
    for word in words:
        assert word in line, line
    _no_rows(results)


@pytest.fixture
def broken_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "sweep" / "broken.yaml").write_text("hydra:\n  sweeper: [unclosed\n")
    (conf / "model" / "broken.yaml").write_text("name: broken\narch: {model_type: llama\n")
    (conf / "model" / "latin.yaml").write_bytes("name: latin\nsource: caf\xe9\n".encode("latin-1"))
    return conf


@pytest.mark.parametrize("env, args, words", [
    ({"BENCH_CONF_DIR": "/no/such/conf"}, ["dry_run=true"],
     ["BENCH_CONF_DIR", "/no/such/conf", "config.yaml"]),
    ({"BENCH_CONF_DIR": "<broken>"}, ["+sweep=broken"], ["broken.yaml", "not valid YAML"]),
    ({"BENCH_CONF_DIR": "<broken>"}, ["model=broken"], ["broken.yaml", "not valid YAML"]),
    ({"BENCH_CONF_DIR": "<broken>"}, ["model=latin"], ["latin.yaml", "not UTF-8"]),
])
def test_a_broken_config_directory_is_one_line(env: dict, args: list[str], words: list[str],
                                              broken_conf: Path, tmp_path: Path,
                                              cache_dir: Path, monkeypatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, str(broken_conf) if value == "<broken>" else value)
    proc = run_bench(*args, f"results_dir={tmp_path / 'results'}", cwd=tmp_path,
                     cache=cache_dir)
    line = _only_line(proc.stderr)
    assert proc.returncode == 2
    for word in words:
        assert word in line, line
    _no_rows(tmp_path / "results")


@pytest.mark.parametrize("module, args, words", [
    ("bench.evals.humaneval", ["<samples>", "--timeout", "nan"], ["--timeout", "finite"]),
    ("bench.evals.humaneval", ["<samples>", "--timeout", "inf"], ["--timeout", "finite"]),
    ("bench.evals.humaneval", ["<samples>", "--workers", "0"], ["--workers", "positive"]),
    ("bench.report", ["results_dir=/no/such/results"], ["results_dir", "does not exist"]),
    ("bench.report", ["results_dir=<samples>"], ["results_dir", "is a file"]),
    ("bench.ops.nightly", ["--run-id", "../x"], ["--run-id", "letters, digits"]),
    ("bench.ops.nightly", ["--run-id", "n" * 200], ["--run-id", "at most 100"]),
    ("bench.ops.nightly", ["--results-dir", "/proc/bench-results"], ["--results-dir", "cannot"]),
    ("bench.ops.nightly", ["--state-dir", "<samples>"], ["--state-dir", "is a file"]),
    ("bench.ops.nightly", ["--reports-dir", "/sys/bench-reports"], ["--reports-dir", "cannot"]),
    ("bench.report", ["colour=red"], ["colour=red", "results_dir, reports_dir"]),
    ("bench.report", ["reports_dir=/proc/bench-report"], ["reports_dir", "cannot take files"]),
])
def test_the_other_commands_refuse_bad_input_in_one_line(
        module: str, args: list[str], words: list[str], tmp_path: Path,
        cache_dir: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n')
    (tmp_path / "results").mkdir()
    args = [a.replace("<samples>", str(samples)) for a in args]
    if module == "bench.ops.nightly":  # nothing of tmp_path is written before the refusal
        args += [f"--{k}-dir={tmp_path / k}" for k in ("results", "reports", "state")
                 if not any(a.startswith(f"--{k}-dir") for a in args)]
    proc = run_bench(*args, cwd=tmp_path, cache=cache_dir, module=module)
    line = _only_line(proc.stderr)
    assert proc.returncode == 2
    for word in words:
        assert word in line, line


def test_an_empty_results_dir_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    """results_dir= would write rows into the working directory."""
    monkeypatch.chdir(tmp_path)
    code = app.main([*TINY, "results_dir="])
    assert code == 2 and "results_dir is empty" in _only_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())
