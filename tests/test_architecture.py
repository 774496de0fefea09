"""The layout's promises: no import cycle in bench/ (lazy imports inside functions count too),
and importing the plan, the parent's modules or the report imports no inference library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "bench"
HEAVY = ("torch", "transformers", "llama_cpp", "lm_eval", "bitsandbytes", "gptqmodel")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines under `if TYPE_CHECKING:` (annotations only: never executed)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """bench module -> the bench modules it imports anywhere (functions included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` needs mod; `from mod import name` needs mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                # the longest bench module the import names (a module, or a name in one)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("bench"):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_bench_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "bench.engines.hf.engine" in graph
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_planning_and_reporting_import_no_inference_library() -> None:
    code = ("import sys\nimport bench.sweep.plan, bench.app, bench.sweep.runner, bench.report\n"
            "import bench.tasks, bench.tasks.bounds\n"
            "from bench.sweep.plan import make_plan, with_default_sweep\n"
            "make_plan(with_default_sweep(['quant=fp32,gguf-q4_k_m']))\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


ENTRY_POINTS = ("bench", "bench.app", "bench.__main__", "bench.doctor", "bench.nightly")
# The layers are folders, lowest first (docs/design.md): a module may import its own layer
# and those below, never one above. Report and ops read results and conf only. Only the
# entry points (the commands users run) sit beside the folders.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("bench.core",)),
    ("results", ("bench.results",)),
    ("data", ("bench.data",)),
    ("weights", ("bench.weights",)),
    ("engines", ("bench.engines",)),
    ("meters", ("bench.meters",)),
    ("evals", ("bench.evals",)),
    ("tasks", ("bench.tasks",)),
    ("sweep", ("bench.sweep",)),
    ("report", ("bench.report",)),
    ("ops", ("bench.ops",)),
    ("entry", ENTRY_POINTS),
]


def layer_of(module: str) -> int:
    best, index = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    return index


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                found.append(f"{module} ({LAYERS[layer_of(module)][0]}) -> {dep} "
                             f"({LAYERS[layer_of(dep)][0]})")
    return found


def test_the_report_reads_results_not_the_sweep() -> None:
    """The report runs no model: it imports nothing of the sweep, the meters or ops."""
    graph = import_graph()
    below = ("bench.sweep", "bench.meters", "bench.ops")
    assert [f"{m} -> {d}" for m, deps in graph.items() if m.startswith("bench.report")
            for d in deps if d.startswith(below)] == []


def test_every_module_belongs_to_a_layer() -> None:
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_the_layers_are_folders() -> None:
    """No flat module beside the layer folders but the entry points; every folder a layer."""
    flat = {f"bench.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert flat == set(ENTRY_POINTS) - {"bench"}, flat - set(ENTRY_POINTS)
    folders = {f"bench.{p.name}" for p in PACKAGE.iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {prefix for name, prefixes in LAYERS[:-1] for prefix in prefixes}


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(import_graph()) == []


@pytest.mark.parametrize("module, dep", [
    ("bench.weights.tiny", "bench.engines.hf.arch"),
    ("bench.weights.tiny", "bench.evals.offline_mmlu"),
    ("bench.data.mmlu", "bench.weights"),
    ("bench.engines.openai.engine", "bench.tasks.text_generation.quality"),
    ("bench.evals.harness", "bench.sweep.cell"), ("bench.sweep.plan", "bench.report"),
    ("bench.core.config", "bench.engines"), ("bench.engines.hf.engine", "bench.meters"),
    ("bench.core.config", "bench.tasks"), ("bench.meters", "bench.tasks.text_generation.speed"),
])
def test_the_layering_check_fails_on_each_import_it_removed(module: str, dep: str) -> None:
    """Each import this layering removed, put back into the graph, is caught."""
    graph = import_graph()
    graph.setdefault(module, set()).add(dep)
    assert any(line.startswith(f"{module} ") and f"-> {dep} " in line
               for line in upward_imports(graph))


def test_a_parent_side_cache_query_imports_nothing_that_builds(tmp_path: Path) -> None:
    """Whether a cell needs its prepare step is asked in the parent, for every cell: it
    looks in the cache and imports no builder (the tiny model's, a converter) nor torch."""
    code = ("import sys\nfrom bench.sweep.plan import make_plan\n"
            "from bench.engines import needs_preparing\nfrom bench.tasks import task_of\n"
            f"c = make_plan(['model=tiny-llama', 'eval=offline', 'cache_dir={tmp_path}'])[0]"
            ".config\nprint(task_of(c).needs_reference(c), needs_preparing(c))\n"
            "print(sorted(m for m in ('bench.weights.tiny', 'bench.weights.packaged', 'torch', "
            "'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.split("\n")[:2] == ["True True", "[]"], out.stdout + out.stderr


def _task_branches(path: Path) -> list[str]:
    """Comparisons of a model task with task names (`cfg.model.task == "text-to-image"`,
    `task_of(row) in IMAGE_TASKS`): what the task registry answers instead."""
    import re

    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_task = re.compile(r"(^|\.)task$|^task_of\(.*\)$")

    def named_tasks(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "-" in node.value:
            return True
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named_tasks(e) for e in node.elts)
        return isinstance(node, ast.Name) and node.id.endswith("TASKS")

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        if any(is_task.search(ast.unparse(s)) for s in sides) and any(map(named_tasks, sides)):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_task_branch_outside_the_task_packages() -> None:
    """The plan, runner, cell, identity and report ask the task registry; only a task's own
    package (and an engine, which loads the tasks' models it declares) names tasks."""
    where = [p for p in PACKAGE.rglob("*.py")
             if not {"tasks", "engines"} & set(p.relative_to(PACKAGE).parts[:1])]
    assert [b for p in where for b in _task_branches(p)] == []


def test_the_task_branch_check_finds_one() -> None:
    sample = PACKAGE.parent / "tests" / "data" / "_task_branch_sample.py"
    try:
        sample.write_text('def f(cfg, row):\n    if cfg.model.task == "text-to-image":\n'
                          '        return 1\n    return task_of(row) in IMAGE_TASKS\n')
        assert len(_task_branches(sample)) == 2
    finally:
        sample.unlink()
