"""``scripts/`` holds only what the CLI cannot do, each reachable from the README (issue 28).

Scripts are run, never imported by path: a test that needs a script's logic imports it from
the core package, where it lives. These checks read the scripts as text (``ast``) and import
only the ``medunlearn`` names they use, so a script that still names a moved or renamed
module fails here rather than at its next run, hours into a benchmark.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from medunlearn.benchmark.reference import REFERENCE_RECIPE, reference_scenario
from medunlearn.benchmark.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "scripts").iterdir() if p.is_file())
SCRIPT_REF = re.compile(r"scripts/([A-Za-z0-9_.-]+\.py)")
# where a command or a reader may name a script; benchmarks/HISTORY.md names removed ones
# on purpose (each with the commit that holds it)
REFERRERS = (
    "README.md",
    "BENCHMARKS.md",
    "RELIABILITY.md",
    "Makefile",
    "Dockerfile",
    "params.yaml",
    "pyproject.toml",
    "dvc.yaml",
    ".ci/run",
)
REFERRER_DIRS = ("medunlearn", "flows", "tasks", "tests", "benchmarks", "examples", "scripts")


def readme_scripts_section() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Scripts\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Scripts' section"
    return match.group(1)


def referring_files() -> list[Path]:
    files = [REPO / name for name in REFERRERS if (REPO / name).is_file()]
    for folder in REFERRER_DIRS:
        files += [
            p
            for p in sorted((REPO / folder).rglob("*"))
            if p.is_file()
            and p.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ""}
            and p.name != "HISTORY.md"
            and "__pycache__" not in p.parts
        ]
    return files


def test_there_are_scripts_and_nothing_else_in_the_folder() -> None:
    assert SCRIPTS, "scripts/ is empty: drop this test module with the folder"
    assert [p.name for p in SCRIPTS if p.suffix != ".py"] == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_has_a_row_in_the_readme_scripts_table(script: Path) -> None:
    rows = [line for line in readme_scripts_section().splitlines() if line.startswith("| `")]
    named = [row for row in rows if f"`scripts/{script.name}`" in row.split("|")[1]]
    assert len(named) == 1, f"README.md '## Scripts' needs one row for scripts/{script.name}"
    cells = [cell.strip() for cell in named[0].strip("|").split("|")]
    assert len(cells) == 3 and all(cells), f"row for {script.name}: script | what | command"


def test_the_readme_scripts_table_names_no_missing_script() -> None:
    listed = set(SCRIPT_REF.findall(readme_scripts_section()))
    assert listed == {p.name for p in SCRIPTS}


def test_no_file_names_a_script_that_does_not_exist() -> None:
    dangling = [
        f"{path.relative_to(REPO)}: scripts/{name}"
        for path in referring_files()
        for name in SCRIPT_REF.findall(path.read_text(errors="replace"))
        if not (REPO / "scripts" / name).is_file()
    ]
    assert dangling == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_documents_its_own_command(script: Path) -> None:
    doc = ast.get_docstring(ast.parse(script.read_text()))
    assert doc, f"{script.name}: no module docstring"
    assert f"python scripts/{script.name}" in doc


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_core_name_a_script_imports_exists(script: Path) -> None:
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medunlearn"):
            module = importlib.import_module(node.module)
            missing += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if not hasattr(module, alias.name)
                and importlib.util.find_spec(f"{node.module}.{alias.name}") is None
            ]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("medunlearn"):
                    importlib.import_module(alias.name)
    assert missing == []


def test_no_test_loads_a_module_from_a_file_path() -> None:
    loaders = ("spec_from_file_location", "SourceFileLoader", "runpy", "sys.path.insert")
    offenders = [
        f"{path.name}: {word}"
        for path in sorted((REPO / "tests").glob("*.py"))
        if path.name != Path(__file__).name
        for word in loaders
        if word in path.read_text()
    ]
    assert offenders == []


def test_reference_scenario_is_the_reference_codes_model_and_recipe() -> None:
    path = REPO / "benchmarks" / "retina_class_retirement.yaml"
    base = load_scenario(path)
    ref = reference_scenario(path)
    # the reference study's training, as its code sets it
    assert ref.model == {"name": "allcnn", "kwargs": {"width": 1.0}}
    assert (ref.recipe["optimizer"], ref.recipe["lr"], ref.recipe["epochs"]) == ("sgd", 0.01, 15)
    assert ref.recipe["augmentation"] == {"flip": False, "rotate_deg": 0, "shift": 0.0}
    assert "cpu_bf16" not in ref.recipe
    # the model bank keys on this name; tune_defaults' reference: scenarios use it too
    assert ref.name == "retina_class_retirement_reference_w1"
    assert reference_scenario(path, width=0.5).name == "retina_class_retirement_reference_w0.5"
    # same data and request as the scenario it varies
    assert (ref.data, ref.request, ref.seeds) == (base.data, base.request, base.seeds)
    # each call gets its own recipe: changing one cannot change the constant or another
    ref.recipe["augmentation"]["flip"] = True
    assert REFERENCE_RECIPE["augmentation"]["flip"] is False
    assert reference_scenario(path).recipe["augmentation"]["flip"] is False
