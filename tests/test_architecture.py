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
    code = ("import sys\nimport bench.plan, bench.app, bench.runner, bench.report, bench.predict\n"
            "from bench.plan import make_plan, with_default_sweep\n"
            "make_plan(with_default_sweep(['quant=fp32,gguf-q4_k_m']))\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# The layers, lowest first (bench's design): a module may import its own layer and those
# below, never one above. Report and ops read results and conf only.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("bench.config", "bench.errors", "bench.paths", "bench.atomic", "bench.schema",
              "bench.secrets", "bench.process", "bench.provenance", "bench.identity",
              "bench.gpu", "bench.sizes", "bench.store", "bench.outputs", "bench.toolchain",
              "bench.intervals")),
    ("data", ("bench.data",)),
    ("sources", ("bench.sources",)),
    ("engines", ("bench.engines",)),
    ("measure", ("bench.meters", "bench.speed", "bench.quality", "bench.image_speed",
                 "bench.image_quality", "bench.evals",
                 "bench.predict")),
    ("runner", ("bench.cell", "bench.runner", "bench.progress")),
    ("plan", ("bench.plan",)),
    ("top", ("bench.app", "bench.__main__", "bench.doctor", "bench.nightly", "bench.report",
             "bench")),
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


def test_every_module_belongs_to_a_layer() -> None:
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(import_graph()) == []


@pytest.mark.parametrize("module, dep", [
    ("bench.sources.tiny", "bench.engines.hf.arch"), ("bench.sources.tiny", "bench.evals.mmlu"),
    ("bench.data.mmlu", "bench.sources"), ("bench.engines.openai.engine", "bench.quality"),
    ("bench.evals.harness", "bench.cell"), ("bench.runner", "bench.plan"),
    ("bench.config", "bench.engines"), ("bench.engines.hf.engine", "bench.meters"),
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
    code = ("import sys\nfrom bench.plan import make_plan\n"
            "from bench.engines import needs_preparing\nfrom bench.quality import needs_reference\n"
            f"c = make_plan(['model=tiny-llama', 'eval=offline', 'cache_dir={tmp_path}'])[0]"
            ".config\nprint(needs_reference(c), needs_preparing(c))\n"
            "print(sorted(m for m in ('bench.sources.tiny', 'bench.sources.packaged', 'torch', "
            "'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.split("\n")[:2] == ["True True", "[]"], out.stdout + out.stderr
