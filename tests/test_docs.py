"""bench's documentation stands alone: the README is the front page, docs/ holds the design,
the column list is generated from the schema, and nothing points outside the repository."""

from __future__ import annotations

import subprocess

from bench.core.schema import columns_markdown
from tests.conftest import REPO

OUTSIDE = ("../" + "shared", "shared/" + "DESIGN")  # a clone of bench has neither


def test_the_column_list_is_the_schemas() -> None:
    assert (REPO / "docs" / "columns.md").read_text(encoding="utf-8") == columns_markdown(), (
        "docs/columns.md is stale: python -m bench.core.schema > docs/columns.md")


def test_the_readme_is_a_front_page_that_links_every_doc() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "make run" in readme and "make test" in readme
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{doc.name}" in readme, doc.name


def test_nothing_in_the_repository_points_outside_it() -> None:
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in tracked:
        path = REPO / name
        if path.suffix in (".py", ".md", ".yaml", ".toml", ".sh", ".cfg", "") and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(marker in text for marker in OUTSIDE):
                offenders.append(name)
    assert offenders == [], offenders
