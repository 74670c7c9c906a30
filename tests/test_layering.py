"""The core's rooms and their order: no room imports a room above it, no import is hidden
inside a function to dodge a loop, and the core never imports Prefect (issue 28).

Read from the source with ``ast`` (every import statement, wherever it sits), so an import
that only runs in some code path is seen too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "medunlearn"
# lowest first: a room may import only rooms before it (and itself)
ROOMS = ("foundation", "data", "models", "evidence", "unlearn", "revision", "benchmark")
FOUNDATION = {"errors", "settings", "config", "atomic", "versioning"}
# presentation still in the core until the CLI package takes it; it imports inside its
# command functions on purpose (``--help`` must not pay for torch)
PRESENTATION = {"registry_cli", "ledger_cli", "refusal"}


def room(module: str) -> str:
    """``medunlearn.data.request`` -> ``data``; a top-level foundation module -> foundation."""
    parts = module.split(".")
    if len(parts) == 1:
        return "foundation"
    if parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] in PRESENTATION:
        return "presentation"
    return parts[1]


def imports() -> list[tuple[str, str, bool, int]]:
    """(importing module, imported medunlearn module, at module level?, line) for all."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        module = ".".join(path.relative_to(CORE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                found.append((module, name, id(node) in top, node.lineno))
    return found


def test_the_rooms_are_what_the_tree_holds() -> None:
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    assert packages == set(ROOMS) - {"foundation"}
    assert modules == FOUNDATION | PRESENTATION


def test_no_room_imports_a_room_above_it() -> None:
    upward = [
        f"{module}:{line} imports {name}"
        for module, name, _, line in imports()
        if name.startswith("medunlearn.")
        and room(module) in ROOMS
        and room(name) in ROOMS
        and ROOMS.index(room(name)) > ROOMS.index(room(module))
    ]
    assert upward == []


def test_only_presentation_imports_the_core_inside_functions() -> None:
    hidden = [
        f"{module}:{line} imports {name} inside a function"
        for module, name, top, line in imports()
        if name.startswith("medunlearn") and not top and room(module) != "presentation"
    ]
    assert hidden == []


def test_the_core_never_imports_prefect() -> None:
    assert [
        f"{m}:{line}" for m, name, _, line in imports() if name.split(".")[0] == "prefect"
    ] == []


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("medunlearn", "foundation"),
        ("medunlearn.config", "foundation"),
        ("medunlearn.data.request", "data"),
        ("medunlearn.revision.registry", "revision"),
        ("medunlearn.registry_cli", "presentation"),
    ],
)
def test_room_names(module, expected) -> None:
    assert room(module) == expected


def test_no_test_module_imports_another() -> None:
    """Shared set-up lives in ``conftest.py`` fixtures or a support module (``projects``)."""
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [
                f"{path.name} imports {n}" for n in names if n.split(".")[-1].startswith("test_")
            ]
    assert found == []
