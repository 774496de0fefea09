"""Accuracy on the loaded model through lm-eval: offline MMLU-format set and HumanEval."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.data import invented_mmlu
from bench.engines.base import Device
from bench.engines.hf.engine import ENGINE
from bench.evals import lm_eval_dir
from bench.evals.accuracy.mmlu import hub_mmlu_unavailable
from bench.evals.harness import run_evals
from bench.evals.humaneval import load_problems
from bench.sweep.plan import make_plan

CPU = Device("cpu")


def cfg(*args: str):
    """The tiny model on the invented set it is trained on (a broken scoring path shows)."""
    return make_plan(["model=tiny-llama", "eval=offline", "eval.mmlu=invented",
                      "eval.mmlu_limit=null", "eval.mmlu_cloze=false", "eval.quality=false",
                      *args])[0].config


@pytest.fixture(scope="module")
def fp32_model(cache_dir: Path):
    c = cfg()
    return c, ENGINE.load(c, CPU, None, for_eval=True)


def _task_manager(c) -> object:
    from lm_eval.tasks import TaskManager

    root = lm_eval_dir.write_task_dir(c.resolved_cache_dir, c.eval).root
    return TaskManager(include_path=str(root), include_defaults=False)


@pytest.mark.parametrize("shots", [0, 5])
def test_offline_items_render_exactly_as_lm_eval_renders_mmlu(fp32_model, shots: int) -> None:
    """The tiny model is trained on these strings: they must be lm-eval's own prompts."""
    from lm_eval.tasks import get_task_dict

    c, _ = fp32_model
    subject = invented_mmlu.SUBJECTS[0]
    task = get_task_dict([invented_mmlu.task_name(subject)], _task_manager(c))[
        invented_mmlu.task_name(subject)]
    task.set_config("num_fewshot", shots)
    task.build_all_requests(limit=3, rank=0, world_size=1)
    items = invented_mmlu.items(subject, "test")
    for instance in task.instances:
        item = items[instance.doc_id]
        context, continuation = instance.arguments
        assert context == invented_mmlu.fewshot_prompt(item, shots)
        assert continuation in {" A", " B", " C", " D"}


def test_trained_tiny_model_scores_far_above_chance(fp32_model) -> None:
    c, loaded = fp32_model
    out = run_evals(loaded, c.eval, c.resolved_cache_dir)
    f = out.fields
    assert f["mmlu_n"] == len(invented_mmlu.SUBJECTS) * invented_mmlu.TEST_PER_SUBJECT
    assert f["mmlu_acc"] > 0.6, f  # chance is 0.25
    assert f["mmlu_shots"] == 0 and f["eval_set"] == "offline" and f["eval_batch_size"] == 8
    assert f["humaneval_n"] == c.eval.humaneval_limit
    assert 0.0 <= f["humaneval_pass1"] <= 1.0
    assert f["humaneval_isolation"] in {"bwrap", "rlimits"}
    assert f["eval_s"] > 0


def test_an_untrained_model_scores_near_chance(cache_dir: Path) -> None:
    """The same scoring path on the same architecture, untrained: the signal is real."""
    c = cfg("model.tiny.steps=0", "eval.humaneval=false")
    loaded = ENGINE.load(c, CPU, None, for_eval=True)
    acc = run_evals(loaded, c.eval, c.resolved_cache_dir).fields["mmlu_acc"]
    assert acc < 0.45


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 5])
def test_bench_accuracy_equals_lm_eval_run_directly(fp32_model, shots: int) -> None:
    from lm_eval import simple_evaluate

    c, loaded = fp32_model
    settings = cfg(f"eval.mmlu_shots={shots}", "eval.humaneval=false").eval
    ours = run_evals(loaded, settings, c.resolved_cache_dir).fields
    direct = simple_evaluate(model=loaded.lm(settings.batch_size),
                             tasks=[invented_mmlu.GROUP], num_fewshot=shots,
                             task_manager=_task_manager(c))
    metrics = direct["results"][invented_mmlu.GROUP]
    assert ours["mmlu_acc"] == metrics["acc,none"]
    assert ours["mmlu_stderr"] == metrics["acc_stderr,none"]
    # the same figure generically, with every question's outcome: their mean is the figure
    # (a size-weighted mean over subjects is a plain mean over questions)
    assert ours["accuracy"] == {"mmlu/acc": ours["mmlu_acc"]}
    assert ours["accuracy_n"] == {"mmlu/acc": ours["mmlu_n"]}
    bits = ours["accuracy_outcomes"]["mmlu/acc"]
    assert len(bits) == ours["mmlu_n"] and set(bits) <= {"0", "1"}
    assert bits.count("1") / len(bits) == pytest.approx(ours["mmlu_acc"])
    low, high = ours["accuracy_ci_low"]["mmlu/acc"], ours["accuracy_ci_high"]["mmlu/acc"]
    assert low < ours["mmlu_acc"] < high or ours["mmlu_acc"] in (0.0, 1.0)
    again = run_evals(loaded, settings, c.resolved_cache_dir).fields
    assert again["accuracy_outcomes"] == ours["accuracy_outcomes"]  # deterministic
    assert again["accuracy_items"] == ours["accuracy_items"]


def test_humaneval_task_scores_canonical_and_broken_completions_in_the_sandbox() -> None:
    problems = load_problems()
    doc = problems["HumanEval/0"]
    assert lm_eval_dir.process_humaneval(doc, [doc["canonical_solution"]]) == {"pass@1": 1.0}
    assert lm_eval_dir.process_humaneval(doc, ["    return None\n"]) == {"pass@1": 0.0}


def test_hub_mmlu_without_network_is_a_clear_reason_not_a_hang(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    reason = hub_mmlu_unavailable()
    assert reason is not None and "cais/mmlu" in reason
    assert time.monotonic() - start < 60
