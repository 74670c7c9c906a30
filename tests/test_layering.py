"""The layers and the core's rooms: no room imports a room above it, no import is hidden
inside a function to dodge a loop, the core never imports Prefect, and the outer layers
stack as ``medunlearn`` < ``tasks`` < ``flows`` < ``cli`` (issue 28).

Read from the source with ``ast`` (every import statement, wherever it sits), so an import
that only runs in some code path is seen too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "medunlearn"
# lowest first: a room may import only rooms before it (and itself)
ROOMS = ("foundation", "data", "models", "evidence", "unlearn", "revision", "benchmark")
FOUNDATION = {"errors", "settings", "config", "atomic", "versioning"}
# outermost last: a layer may import only layers before it
LAYERS = ("medunlearn", "tasks", "flows", "cli")


def room(module: str) -> str:
    """``medunlearn.data.request`` -> ``data``; a top-level foundation module -> foundation."""
    parts = module.split(".")
    if len(parts) == 1:
        return "foundation"
    if parts[1] in FOUNDATION:
        return "foundation"
    return parts[1]


def imports(package: Path = CORE) -> list[tuple[str, str, bool, int]]:
    """(importing module, imported module, at module level?, line) for every import
    statement of ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
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
    assert modules == FOUNDATION


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


def test_the_core_imports_the_core_only_at_module_level() -> None:
    hidden = [
        f"{module}:{line} imports {name} inside a function"
        for module, name, top, line in imports()
        if name.startswith("medunlearn") and not top
    ]
    assert hidden == []


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_layer_outside_it(layer) -> None:
    outer = LAYERS[LAYERS.index(layer) + 1 :]
    found = [
        f"{module}:{line} imports {name}"
        for module, name, _, line in imports(ROOT / layer)
        if name.split(".")[0] in outer
    ]
    assert found == []


def test_the_command_line_imports_heavy_libraries_only_inside_commands() -> None:
    """``--help`` answers at once: at module level ``cli/`` imports only Typer, the
    standard library, itself and the light foundation (``medunlearn.errors``)."""
    import sys

    allowed = {"typer", "__future__", "cli", "medunlearn"} | set(sys.stdlib_module_names)
    heavy = [
        f"{module}:{line} imports {name} at module level"
        for module, name, top, line in imports(ROOT / "cli")
        if top
        and name.split(".")[0] not in allowed
        or top
        and name.startswith("medunlearn.")
        and name != "medunlearn.errors"
    ]
    assert heavy == []


@pytest.mark.parametrize(
    "args", [["--help"], ["revise", "--help"], ["bench", "--help"], ["--version"]]
)
def test_help_loads_no_heavy_library(args) -> None:
    """Measured in a fresh interpreter: after ``medunlearn ARGS`` neither torch, Prefect,
    pandas nor Great Expectations was imported (they cost seconds to import)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cli.main import main\n"
        f"main({args!r})\n"
        "heavy = [m for m in ('torch', 'prefect', 'pandas', 'great_expectations') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-2000:]


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
