"""Entry point of ``medunlearn``: the settings check, refusals in one line, exit codes.

    medunlearn prepare | train | revise | drift | serve | bench      # cli/pipeline.py
    medunlearn show | registry | status | promote | rollback | reproduce | card | audit
    medunlearn request add | list | reject                          # cli/ledger.py
    medunlearn --version | --help | --install-completion

Exit codes: 0 done; 1 refused (a :class:`~medunlearn.errors.Refusal`: bad input, a bad
setting or a rule that says no, printed as one line naming the file, row, column, key or
rule; a full disk, naming the file); 2 usage (Typer's message). Any other exception is a
bug and keeps its traceback. The process ends by the interpreter's normal exit.
"""

from __future__ import annotations

import errno
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer

from cli import ledger, pipeline, registry  # noqa: F401  (their commands join the app)
from cli.app import app

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT)  # the environment, not a bug: one line


def _version(value: bool) -> None:
    if value:
        print(f"medunlearn {package_version('medunlearn')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", callback=_version, is_eager=True, help="print the version"
        ),
    ] = False,
) -> None:
    """Revise a deployed clinical imaging classifier by machine unlearning."""


def command_name(args: list[str]) -> str:
    """The command a command line runs, as its refusals name it (``request add``).

    Args:
        args: the command line without the program name.

    Returns:
        The first word that is not an option, with the next one for ``request``.
    """
    words = [a for a in args if not a.startswith("-")]
    if not words:
        return "medunlearn"
    return " ".join(words[:2]) if words[0] == "request" and len(words) > 1 else words[0]


def main(argv: list[str] | None = None) -> None:
    """Run one command line; success returns, so tests and scripts go on.

    Args:
        argv: the command line without the program name (default ``sys.argv[1:]``).

    Raises:
        SystemExit: status 1 after a one-line refusal on stderr, 2 on a usage error.
    """
    from cli.refusal import quiet_refusals
    from medunlearn.errors import Refusal

    args = list(sys.argv[1:] if argv is None else argv)
    check_params_file(args)
    quiet_refusals()  # every command: a refusal is said once, by the command, in one line
    try:
        app(args=args, prog_name="medunlearn")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    except Refusal as exc:  # one line naming the file, row, column, key or rule
        print(f"{command_name(args)} refused: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"refused: {exc.strerror}{where}; free space and run again", file=sys.stderr)
        raise SystemExit(1) from None


def params_path(args: list[str]) -> tuple[str, bool]:
    """The ``--params`` file a command line names and whether it was named.

    Args:
        args: the command line without the program name.

    Returns:
        The path (``--params F`` or ``--params=F``; else ``params.yaml``) and whether it
        was named.
    """
    for i, arg in enumerate(args):
        if arg == "--params" and i + 1 < len(args):
            return args[i + 1], True
        if arg.startswith("--params="):
            return arg.split("=", 1)[1], True
    return "params.yaml", False


def check_params_file(args: list[str]) -> None:
    """Load and check the params file once, before any command runs.

    A bad setting is refused in one line naming the file and key, before any data is read.
    A command line without ``--params`` outside a project (no ``params.yaml``) is not
    checked; ``--help``, ``--version`` and completion are never blocked.

    Args:
        args: the command line without the program name.

    Raises:
        SystemExit: status 1 after the one-line refusal.
    """
    if not args or any(a in ("--help", "-h", "--version") for a in args):
        return
    if any(a.startswith(("--install-completion", "--show-completion")) for a in args):
        return
    path, named = params_path(args)
    if not named and not Path(path).is_file():
        return
    from medunlearn.config import ConfigError, load_params

    try:
        load_params(path)
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def run() -> None:
    """Console entry point (``medunlearn``, ``python -m cli``).

    :func:`main`, then the interpreter's normal exit with its status (0, 1 refused,
    2 usage).

    Raises:
        SystemExit: status 1 after a refusal, 2 on a usage error (raised by :func:`main`).
    """
    main()
