"""The fixed real text quality is measured on (and servers' prompts are cut from): the MMLU
test questions, in the file's order."""

from __future__ import annotations

from bench.data.mmlu import SOURCE, data_file, read_questions
from bench.data.packages import sha256_of


def text(cache_dir: str) -> str:
    """The fixed real text: the MMLU test questions in the file's order."""
    return "\n\n".join(q.question.strip() for q in read_questions(data_file(cache_dir)))


def text_source(cache_dir: str) -> str:
    path = data_file(cache_dir)
    return f"MMLU test questions of {SOURCE[0]} {SOURCE[1]} sha256:{sha256_of(path)[:12]}"
