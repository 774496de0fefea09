"""An MMLU-format set of invented facts that bench generates itself (eval.mmlu=invented),
for bench's own tests only: the real MMLU is bench.evals.offline_mmlu.

Items look exactly like cais/mmlu rows (question, subject, four choices, answer index) and
are scored by lm-eval with MMLU's own prompt format and A-D log-likelihood. The facts are
invented, so no model knows them unless taught: the offline tiny model is trained on them
(bench.weights.tiny), which makes a broken scoring path visible in a test (it would fall to
chance, 25 %). No preset uses it: a score on it says nothing about a real model.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

SUBJECTS = ("imaginary geography", "imaginary chemistry", "imaginary zoology",
            "imaginary history")
LETTERS = ("A", "B", "C", "D")
TEST_PER_SUBJECT = 24
DEV_PER_SUBJECT = 5
SEED = 1234
# lm-eval's MMLU template (lm_eval/tasks/mmlu/default/_default_template_yaml).
DOC_TO_TEXT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
               "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:")
FEWSHOT_DELIMITER = "\n\n"
TARGET_DELIMITER = " "

_SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "tor", "sil", "bar", "qui", "del", "nor", "zan",
              "pe", "ul", "mor", "tis", "gan", "fe", "ro", "bi")
_TEMPLATES = {
    "imaginary geography": ("What is the capital of {x}?", "city"),
    "imaginary chemistry": ("Which metal is refined from {x} ore?", "metal"),
    "imaginary zoology": ("Which animal eats {x} berries?", "animal"),
    "imaginary history": ("Who founded the city of {x}?", "person"),
}


@dataclass(frozen=True)
class Item:
    question: str
    subject: str
    choices: tuple[str, str, str, str]
    answer: int


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def items(subject: str, split: str) -> list[Item]:
    """The deterministic items of one subject and split ('test' or 'dev')."""
    count = TEST_PER_SUBJECT if split == "test" else DEV_PER_SUBJECT
    rng = random.Random(f"{SEED}:{subject}:{split}")
    template, _ = _TEMPLATES[subject]
    out, seen = [], set()
    while len(out) < count:
        topic = _name(rng, 2)
        if topic in seen:
            continue
        seen.add(topic)
        options = []
        while len(options) < 4:
            candidate = _name(rng, rng.choice((2, 3)))
            if candidate not in options:
                options.append(candidate)
        answer = (len(out) + rng.randrange(4)) % 4
        out.append(Item(template.format(x=topic), subject, tuple(options), answer))
    return out


def doc_text(item: Item) -> str:
    """What lm-eval's MMLU doc_to_text renders for this item."""
    c = item.choices
    return (f"{item.question.strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:")


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject}.\n\n"


def fewshot_prompt(item: Item, shots: int) -> str:
    """The context lm-eval builds for `item` at `shots` (first_n sampler over dev)."""
    parts = [doc_text(d) + TARGET_DELIMITER + LETTERS[d.answer]
             for d in items(item.subject, "dev")[:shots]]
    return description(item.subject) + "".join(p + FEWSHOT_DELIMITER for p in parts) + \
        doc_text(item)


def task_name(subject: str) -> str:
    return "bench_mmlu_invented_" + subject.replace("imaginary ", "")


GROUP = "bench_mmlu_invented"


def write_data(root: Path) -> dict[str, dict[str, Path]]:
    """JSONL files per subject and split, in cais/mmlu's row format."""
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[str, Path]] = {}
    for subject in SUBJECTS:
        paths[subject] = {}
        for split in ("test", "dev"):
            path = root / f"{task_name(subject)}_{split}.jsonl"
            lines = [json.dumps({**asdict(i), "choices": list(i.choices)}, sort_keys=True)
                     for i in items(subject, split)]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            paths[subject][split] = path
    return paths


def task_configs(data: dict[str, dict[str, Path]]) -> list[dict]:
    """lm-eval task YAML contents: one task per subject and the size-weighted group."""
    tasks = []
    for subject in SUBJECTS:
        tasks.append({
            "task": task_name(subject),
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {s: str(p) for s, p in data[subject].items()}},
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": description(subject),
            "doc_to_text": DOC_TO_TEXT,
            "doc_to_choice": list(LETTERS),
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean",
                             "higher_is_better": True}],
            "metadata": {"version": 1.0},
        })
    tasks.append({"group": GROUP, "task": [task_name(s) for s in SUBJECTS],
                  "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                  "metadata": {"version": 1.0}})
    return tasks
