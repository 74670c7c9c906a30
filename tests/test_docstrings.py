"""Docstring sections that ruff's pydocstyle rules do not check (issue 28).

``ruff check`` (``D`` rules, google convention; ``pyproject.toml``) makes every public
function, method and class in the rooms below carry a docstring and, through D417, lists
every argument once an ``Args:`` section exists. It does not ask for the sections
themselves, so this module reads the sources with ``ast`` and requires, for every public
function and method (a name without a leading ``_``, plus ``__call__``; methods of public
classes only; ``@property`` getters are documented as attributes and skipped):

- ``Args:`` when it takes an argument (besides ``self``/``cls``), and for a public class
  whose ``__init__`` takes arguments, an ``Args:`` entry for each in the class or
  ``__init__`` docstring (D417 reads only the ``__init__`` docstring, which may be absent);
- ``Returns:`` when it returns a value: a return annotation other than ``None``, or without
  an annotation a ``return <value>``; ``Yields:`` instead for a generator;
- ``Raises:`` naming every exception class it raises itself (``raise Name(...)``,
  ``raise module.Name``; a bare ``raise`` or a raised variable names no class). Raises in
  nested functions belong to them, not to the enclosing function.

Typer commands (functions decorated ``@<app>.command(...)``, e.g. ``@app.command()`` or
``@request_app.command("add")`` in ``cli/``) need no ``Args:`` and no ``Raises:``: their
docstring is the command's ``--help`` text, where a section would be printed to users.
Their options document themselves through ``help=``, and the docstring tells the exit
status in prose ("exit 1 when ..."). D417 does not reach them either, since they have no
``Args:`` section; ``Returns:`` still applies (they return nothing). Prefect ``@flow`` and
``@task`` functions are ordinary functions here: all three sections apply.

Each rule is a row of ``RULES``; the rule cases at the end run them on small sources that
lack a section, to show that the check reports what it should (and is not vacuous).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = (
    "medunlearn/data",
    "medunlearn/models",
    "medunlearn/evidence",
    "medunlearn/unlearn",
    "medunlearn/revision",
    "medunlearn/settings.py",
    "medunlearn/config.py",
    "medunlearn/atomic.py",
    "medunlearn/versioning.py",
    "medunlearn/errors.py",
    "medunlearn/benchmark",
    "cli",
    "flows",
    "tasks",
)
# being documented elsewhere (issue 28); pyproject.toml exempts them from D too
LEFT_OUT: tuple[str, ...] = ()
SECTIONS = ("Args", "Returns", "Yields", "Raises", "Attributes", "Example", "Examples", "Note")
Function = ast.FunctionDef | ast.AsyncFunctionDef
Problem = tuple[str, str]  # (qualified name, what is missing)


@dataclass(frozen=True)
class Target:
    """One public function or method, with the docstring that must describe it."""

    name: str  # qualified: ``Class.method`` or ``function``
    node: Function
    docstring: str


def sections(docstring: str) -> dict[str, list[str]]:
    """Google-style sections of a docstring: header -> the entry names under it.

    An entry is a line indented one level below its header, ``name: text`` or ``name``
    (``Raises:`` entries are exception classes, possibly dotted: the last part counts).
    """
    found: dict[str, list[str]] = {}
    current: str | None = None
    header_indent = entry_indent = 0
    for line in docstring.expandtabs().splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        header = re.fullmatch(r"(\w+):", stripped)
        if header and header.group(1) in SECTIONS:
            current, header_indent, entry_indent = header.group(1), indent, 0
            found[current] = []
            continue
        if current is None or not stripped:
            continue
        if indent <= header_indent:
            current = None  # prose after the section ends it
            continue
        if entry_indent == 0:
            entry_indent = indent
        if indent == entry_indent:
            name = re.match(r"\*{0,2}([\w.]+)", stripped)
            if name:
                found[current].append(name.group(1).rsplit(".", 1)[-1])
    return found


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node in a function's body, not descending into nested functions or classes."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        yield child
        yield from _own_nodes(child)


def raised_classes(node: Function) -> set[str]:
    """Exception classes a function raises itself: ``raise Name(...)`` or ``raise a.Name``
    with a capitalised name (a raised variable or factory call names no class)."""
    names = set()
    for child in _own_nodes(node):
        if isinstance(child, ast.Raise) and child.exc is not None:
            target = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            name = (
                target.id
                if isinstance(target, ast.Name)
                else target.attr
                if isinstance(target, ast.Attribute)
                else ""
            )
            if name[:1].isupper():
                names.add(name)
    return names


def is_generator(node: Function) -> bool:
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in _own_nodes(node))


def returns_value(node: Function) -> bool:
    """A return annotation other than ``None``/``NoReturn``, or (unannotated) a ``return x``."""
    if node.returns is not None:
        text = ast.unparse(node.returns).strip("'\"")
        return text not in ("None", "NoReturn", "typing.NoReturn")
    return any(
        isinstance(n, ast.Return)
        and n.value is not None
        and not (isinstance(n.value, ast.Constant) and n.value.value is None)
        for n in _own_nodes(node)
    )


def arguments(node: Function) -> list[str]:
    """Argument names as ``Args:`` lists them (``self``/``cls`` left out)."""
    a = node.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return [n for n in names if n not in ("self", "cls")]


def _is_property(node: Function) -> bool:
    return any(
        (isinstance(d, ast.Name) and d.id in ("property", "cached_property"))
        or (isinstance(d, ast.Attribute) and d.attr in ("setter", "cached_property"))
        for d in node.decorator_list
    )


def is_typer_command(node: Function) -> bool:
    """Decorated ``@<app>.command(...)`` (or ``@<app>.command``): a Typer command."""
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr == "command":
            return True
    return False


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__call__"


def targets(tree: ast.Module) -> Iterator[Target]:
    """The public functions and methods of a module (properties left out)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            yield Target(node.name, node, ast.get_docstring(node) or "")
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    and _public(item.name)
                    and not _is_property(item)
                ):
                    doc = ast.get_docstring(item) or ""
                    yield Target(f"{node.name}.{item.name}", item, doc)


def needs_args(t: Target) -> list[str]:
    if is_typer_command(t.node):
        return []  # the --help text: options document themselves through help=
    if arguments(t.node) and "Args" not in sections(t.docstring):
        return ["Args:"]
    return []


def needs_returns(t: Target) -> list[str]:
    found = sections(t.docstring)
    if is_generator(t.node):
        return [] if "Yields" in found else ["Yields:"]
    if returns_value(t.node) and "Returns" not in found:
        return ["Returns:"]
    return []


def needs_raises(t: Target) -> list[str]:
    if is_typer_command(t.node):
        return []  # the --help text tells the exit status in prose
    listed = set(sections(t.docstring).get("Raises", []))
    return [f"Raises: {name}" for name in sorted(raised_classes(t.node) - listed)]


RULES: dict[str, Callable[[Target], list[str]]] = {
    "args": needs_args,
    "returns": needs_returns,
    "raises": needs_raises,
}


def class_init_args(tree: ast.Module) -> list[Problem]:
    """Public classes whose ``__init__`` arguments are not all listed under ``Args:`` in the
    class or ``__init__`` docstring (``ruff``'s D417 sees the latter only)."""
    problems = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                listed = set(sections(ast.get_docstring(node) or "").get("Args", []))
                listed |= set(sections(ast.get_docstring(item) or "").get("Args", []))
                missing = [a for a in arguments(item) if a not in listed]
                if missing:
                    problems.append((node.name, f"Args: {', '.join(missing)}"))
    return problems


def problems_in(source: str) -> list[Problem]:
    """Every missing section in one module's source, as (name, what is missing)."""
    tree = ast.parse(source)
    found = [(t.name, m) for t in targets(tree) for rule in RULES.values() for m in rule(t)]
    return found + class_init_args(tree)


def room_files() -> list[Path]:
    files = []
    for room in ROOMS:
        path = ROOT / room
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in files if str(f.relative_to(ROOT)) not in LEFT_OUT]


@pytest.mark.parametrize("path", room_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_public_functions_document_their_sections(path: Path) -> None:
    assert problems_in(path.read_text()) == []


def test_the_rooms_hold_public_functions() -> None:
    # the check above must have something to check: every room file parses, and together
    # they hold several hundred public functions and methods (111 files and 509 targets when
    # medunlearn/revision joined the list)
    n = sum(len(list(targets(ast.parse(p.read_text())))) for p in room_files())
    assert len(room_files()) >= 105 and n >= 480


# --------------------------------------------------------------------------- rule cases

COMPLETE = '''
def scale(x: float, factor: float = 2.0) -> float:
    """Scale a number.

    Args:
        x: the number.
        factor: the multiplier.

    Returns:
        ``x * factor``.

    Raises:
        ValueError: ``factor`` is negative.
    """
    if factor < 0:
        raise ValueError("negative")
    return x * factor
'''

CASES = {
    # name: (source, expected problems)
    "complete": (COMPLETE, []),
    "no Returns": (
        'def f() -> int:\n    """One."""\n    return 1\n',
        [("f", "Returns:")],
    ),
    "unannotated return value": (
        'def f():\n    """One."""\n    return 1\n',
        [("f", "Returns:")],
    ),
    "a bare return needs nothing": (
        'def f() -> None:\n    """Nothing."""\n    return\n',
        [],
    ),
    "generator needs Yields, not Returns": (
        'def f() -> Iterator[int]:\n    """Count.\n\n    Returns:\n        x\n    """\n'
        "    yield 1\n",
        [("f", "Yields:")],
    ),
    "no Raises": (
        'def f() -> None:\n    """Refuse."""\n    raise ValueError("no")\n',
        [("f", "Raises: ValueError")],
    ),
    "Raises lists another class": (
        'def f() -> None:\n    """Refuse.\n\n    Raises:\n        KeyError: never.\n    """\n'
        "    raise errors.Refusal('no')\n",
        [("f", "Raises: Refusal")],
    ),
    "no Args": (
        'def f(a: int) -> None:\n    """Take a."""\n',
        [("f", "Args:")],
    ),
    "method without Args and Returns": (
        'class K:\n    """K."""\n\n    def m(self, a):\n        """M."""\n        return a\n',
        [("K.m", "Args:"), ("K.m", "Returns:")],
    ),
    "class without its __init__ arguments": (
        'class K:\n    """K.\n\n    Args:\n        a: one.\n    """\n\n'
        "    def __init__(self, a, b):\n        self.a = a\n",
        [("K", "Args: b")],
    ),
    "__call__ is public": (
        'class K:\n    """K."""\n\n    def __call__(self) -> int:\n        return 1\n',
        [("K.__call__", "Returns:")],
    ),
    "private, nested and bare raises are not counted": (
        "def _f() -> int:\n    raise ValueError\n\n"
        'def g() -> None:\n    """G."""\n\n    def inner():\n        raise KeyError\n\n'
        "    try:\n        inner()\n    except KeyError as exc:\n        raise\n"
        "    raise exc\n",
        [],
    ),
    "a Typer command needs no Args or Raises": (
        '@app.command()\ndef go(n: int) -> None:\n    """Go n steps; exit 1 when n < 0."""\n'
        "    raise SystemExit(1)\n\n"
        '@request_app.command("add")\ndef add(n: int) -> None:\n    """Add."""\n'
        "    raise typer.BadParameter('no')\n",
        [],
    ),
    "a Prefect task is an ordinary function": (
        '@task(name="t")\ndef t(n: int) -> int:\n    """T."""\n    raise ValueError\n',
        [("t", "Args:"), ("t", "Returns:"), ("t", "Raises: ValueError")],
    ),
    "a property is documented as an attribute": (
        'class K:\n    """K."""\n\n    @property\n    def n(self) -> int:\n'
        '        """How many."""\n        return 1\n',
        [],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rule_cases(case: str) -> None:
    source, expected = CASES[case]
    assert sorted(problems_in(source)) == sorted(expected)


def test_sections_reads_google_entries() -> None:
    doc = (
        "Summary.\n\nArgs:\n    x: the number,\n        continued.\n    *args: more.\n\n"
        "Raises:\n    medunlearn.errors.Refusal: no.\n    ValueError\n\nMore prose."
    )
    assert sections(doc) == {"Args": ["x", "args"], "Raises": ["Refusal", "ValueError"]}
