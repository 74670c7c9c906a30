"""The Typer application, its sub-applications and the options every command shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="medunlearn",
    help="Revise a deployed clinical imaging classifier by machine unlearning.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,  # a bug keeps Python's plain traceback
)
request_app = typer.Typer(help="The forget ledger.", no_args_is_help=True)
app.add_typer(request_app, name="request")

ParamsFile = Annotated[str, typer.Option("--params", help="the project's params file")]
JsonFlag = Annotated[bool, typer.Option("--json", metavar="", help="print the result as JSON")]


class Stage(str, Enum):
    """A registry stage."""

    candidate = "candidate"
    staging = "staging"
    production = "production"


class Promotable(str, Enum):
    """A stage a version can be promoted to."""

    staging = "staging"
    production = "production"


def emit(result: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print a command's result: JSON (``--json``), else ``text(result)`` when given.

    Args:
        result: the JSON-ready result.
        as_json: print JSON.
        text: the human form; None prints nothing without ``--json``.
    """
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif text is not None:
        print(text(result))
