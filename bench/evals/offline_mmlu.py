"""The real MMLU test split, offline (its questions, exemplar pools and fixed samples:
bench.data.mmlu), as lm-eval tasks in MMLU's own two forms.

Two forms, as lm-eval defines them for cais/mmlu: letter (`mmlu`: the question, A-D choices,
"Answer:", log-likelihood of " A" ... " D") and continuation or cloze (`mmlu_continuation`:
"Question: ...\\nAnswer:", log-likelihood of each choice's text). Letter scoring is near
chance for models under ~1B parameters; the cloze form is what their authors report.
Groups are size-weighted means over the subjects, as lm-eval aggregates `mmlu`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from bench.core.atomic import write_text
from bench.data.mmlu import (
    LETTERS,
    QUESTIONS,
    SOURCE,
    SUBJECTS,
    by_subject,
    data_file,
    read_questions,
    split,
)
from bench.data.packages import sha256_of

GROUP = "bench_mmlu"
CLOZE_GROUP = "bench_mmlu_cloze"
# lm-eval's templates (lm_eval/tasks/mmlu/default and .../continuation)
LETTER_TEXT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
               "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:")
CLOZE_TEXT = "Question: {{question.strip()}}\nAnswer:"


@dataclass(frozen=True)
class MmluTasks:
    """The lm-eval groups written for one setting, and what they were made from."""

    letter_group: str
    cloze_group: str
    questions: int  # scored per form
    subjects: int
    source: str  # for the row: file, hash, how many of how many


def _subjects_words(n: int) -> str:
    return f"{n} subjects" if n == SUBJECTS else f"{n} of {SUBJECTS} subjects"


def _subject_words(subject: str) -> str:
    return subject.replace("_", " ")


def _task(name: str, files: dict[str, str], description: str, text: str,
          choices: object, target: str) -> dict:
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice", "description": description,
            "doc_to_text": text, "doc_to_choice": choices, "doc_to_target": target,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0}}


def write_tasks(root: Path, cache_dir: str | Path, per_subject: Optional[int], shots: int,
                only: tuple[str, ...] = ()) -> tuple[MmluTasks, list[dict]]:
    """Data files under root/data and the task configs (subject tasks and both groups);
    `only` keeps those subjects (all when empty)."""
    path = data_file(cache_dir)
    questions = read_questions(path)
    subjects = by_subject(questions)
    if len(questions) != QUESTIONS or len(subjects) != SUBJECTS:
        raise ValueError(f"{path}: {len(questions)} questions in {len(subjects)} subjects, "
                         f"expected {QUESTIONS} in {SUBJECTS}")
    if only:
        subjects = {s: qs for s, qs in subjects.items() if s in only}
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    configs, letter, cloze, scored = [], [], [], 0
    for subject, ordered in subjects.items():
        dev, test = split(ordered, per_subject, shots)
        scored += len(test)
        files = {}
        for split_name, rows in (("dev", dev), ("test", test)):
            file = data / f"mmlu_{subject}_{split_name}.jsonl"
            write_text(file, "".join(json.dumps({**asdict(q), "choices": list(q.choices)})
                                     + "\n" for q in rows))
            files[split_name] = str(file)
        words = _subject_words(subject)
        letter.append(f"{GROUP}_{subject}")
        cloze.append(f"{CLOZE_GROUP}_{subject}")
        configs.append(_task(letter[-1], files, f"The following are multiple choice questions "
                             f"(with answers) about {words}.\n\n", LETTER_TEXT, list(LETTERS),
                             "answer"))
        configs.append(_task(cloze[-1], files, f"The following are questions (with answers) "
                             f"about {words}.\n\n", CLOZE_TEXT, "{{choices}}", "{{answer}}"))
    for group, members in ((GROUP, letter), (CLOZE_GROUP, cloze)):
        configs.append({"group": group, "task": members, "metadata": {"version": 1.0},
                        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]})
    how = (f"{per_subject} per subject" if per_subject is not None else "all")
    source = (f"{SOURCE[0]} {SOURCE[1]} {Path(SOURCE[2]).name} sha256:{sha256_of(path)[:12]}: "
              f"{scored} of {QUESTIONS} questions ({how}), {_subjects_words(len(subjects))}, "
              f"{shots}-shot")
    return MmluTasks(GROUP, CLOZE_GROUP, scored, len(subjects), source), configs
