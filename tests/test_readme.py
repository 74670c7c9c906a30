"""The README's architecture table names every module of the tree, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = [
    "cli",
    "flows",
    "tasks",
    "medunlearn/data",
    "medunlearn/models",
    "medunlearn/evidence",
    "medunlearn/unlearn",
    "medunlearn/revision",
    "medunlearn/benchmark",
]


def table(text: str | None = None) -> dict[str, set[str]]:
    """``Where`` cell -> the module names of its ``Modules`` cell (README.md's, or ``text``)."""
    text = (ROOT / "README.md").read_text() if text is None else text
    section = text[text.index("## Architecture") :]
    section = section[: section.index("\n## ", 5)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            where = re.findall(r"`([^`]+)`", cells[0])[0].rstrip("/")
            rows[where] = set(re.findall(r"`([^`]+)`", cells[1]))
    return rows


def modules(folder: Path) -> set[str]:
    found = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__"}
    return found | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_module_is_in_the_architecture_table(folder: str) -> None:
    assert table()[folder] == modules(ROOT / folder)


def test_the_foundation_row_is_the_cores_top_level() -> None:
    assert table()["medunlearn"] == modules(ROOT / "medunlearn") - {
        "data",
        "models",
        "evidence",
        "unlearn",
        "revision",
        "benchmark",
    }


def test_a_module_missing_from_the_table_is_noticed(tmp_path: Path) -> None:
    """The check can fail: a folder holding one module more than its row names."""
    (tmp_path / "kept.py").write_text("")
    (tmp_path / "extra.py").write_text("")
    readme = "## Architecture\n\n| Where | Modules | What |\n|---|---|---|\n"
    readme += "| `pkg/` | `kept` | the package |\n\n## Next\n"
    rows = table(readme)
    assert rows == {"pkg": {"kept"}}
    assert rows["pkg"] != modules(tmp_path)  # what the parametrized test asserts equal
    assert modules(tmp_path) - rows["pkg"] == {"extra"}


def test_every_test_the_docs_cite_exists() -> None:
    """``test_x.py::test_name`` in README.md, RELIABILITY.md and BENCHMARKS.md names a test
    that exists (tests are renamed when modules move)."""
    import ast

    defined = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined[path.name] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = []
    for doc in ("README.md", "RELIABILITY.md", "BENCHMARKS.md"):
        for file, name in re.findall(
            r"(test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)", (ROOT / doc).read_text()
        ):
            if name not in defined.get(file, set()):
                missing.append(f"{doc}: {file}::{name}")
    assert missing == []
