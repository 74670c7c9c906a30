"""The ``medunlearn`` command (Typer + rich): one entry point to the pipeline's flows and files.

    medunlearn prepare [--params params.yaml]      # flows.prepare
    medunlearn train [--role retrain --exclude Q]  # flows.train (a deployed model is registered)
    medunlearn show models/deployed.pt             # checkpoint metadata
    medunlearn revise [--request requests/x.yaml]  # flows.maintenance: one revision per request
    medunlearn bench benchmarks/<scenario>.yaml    # benchmark suite (medunlearn.benchmark)
    medunlearn drift [--batch incoming/x.csv]      # flows.drift: drift watch, events
    medunlearn serve                               # flows.deployments: schedules, triggers
    medunlearn status [--json]                     # stages, pending requests, server reachable
    medunlearn registry [MODEL] [--json]           # versions, stages, parents, metrics
    medunlearn promote MODEL VERSION --to staging|production --by NAME --why TEXT [--accept REASON]
    medunlearn rollback MODEL --stage production --by NAME [--to VERSION] [--allow-regression R]
    medunlearn reproduce MODEL VERSION             # re-run a revision in a scratch worktree
    medunlearn card MODEL VERSION [--json]         # the revision card, promotion history now
    medunlearn audit MODEL VERSION -k K [--epochs N] [--json]  # offline LiRA, K reference models
    medunlearn request add FILE | list | reject ID # the forget ledger (revise: every pending)

``prepare``, ``train``, ``revise``, ``drift`` and ``bench`` hand their arguments to the flow's own
parser unchanged (``medunlearn revise --help`` shows its flags), so every flag they had
still works. Flows are imported only by the command that runs them, so ``show`` and the
registry commands start instantly. A registry rule's refusal exits with status 2.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="medunlearn",
    help="Revise a deployed clinical imaging classifier by machine unlearning.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"medunlearn {version('medunlearn')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Revise a deployed clinical imaging classifier by machine unlearning."""


request_app = typer.Typer(help="The forget ledger.", no_args_is_help=True)
app.add_typer(request_app, name="request")

PASSTHROUGH = {
    "context_settings": {
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],  # --help goes to the flow's own parser
    }
}
Params = Annotated[str, typer.Option("--params", help="params file")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


class Promotable(str, Enum):
    staging = "staging"
    production = "production"


class Stage(str, Enum):
    candidate = "candidate"
    staging = "staging"
    production = "production"


def _delegate(module: str, args: list[str]) -> None:
    __import__(module, fromlist=["main"]).main(list(args))


@app.command(**PASSTHROUGH)
def prepare(ctx: typer.Context) -> None:
    """Materialise data/<name> and version it with DVC (flows.prepare)."""
    _delegate("flows.prepare", ctx.args)


@app.command(**PASSTHROUGH)
def train(ctx: typer.Context) -> None:
    """Train the deployed model (registered) or the retrain reference (flows.train)."""
    _delegate("flows.train", ctx.args)


@app.command(**PASSTHROUGH)
def revise(ctx: typer.Context) -> None:
    """One revision per forget request: validate, unlearn, gates, export, register."""
    _delegate("flows.maintenance", ctx.args)


@app.command(**PASSTHROUGH)
def drift(ctx: typer.Context) -> None:
    """Compare the newest incoming batch with the production model's data (flows.drift)."""
    _delegate("flows.drift", ctx.args)


@app.command()
def serve(params: Params = "params.yaml") -> None:
    """Serve the deployments (maintenance/scheduled, drift-watch/scheduled,
    maintenance/on-drift) against PREFECT_API_URL until interrupted."""
    from flows.deployments import serve as serve_deployments

    serve_deployments(params)


@app.command(**PASSTHROUGH)
def bench(ctx: typer.Context) -> None:
    """The benchmark suite on scenario files (medunlearn.benchmark; on Dask: flows.benchmark)."""
    _delegate("flows.benchmark", ctx.args)


@app.command()
def show(checkpoint: Annotated[list[Path], typer.Argument(help="checkpoint files")]) -> None:
    """Print checkpoint metadata."""
    from medunlearn.models.checkpoint import describe, read_metadata

    for path in checkpoint:
        print(describe(read_metadata(path), path))


@app.command()
def registry(
    model: Annotated[str | None, typer.Argument(help="one model (default: all)")] = None,
    as_json: Json = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="finish or undo a registry write a killed run left half done"
        ),
    ] = False,
    params: Params = "params.yaml",
) -> None:
    """Each model's versions, stages, parent, request reason and headline metrics."""
    from medunlearn import registry_cli

    registry_cli.run("registry", params, model=model, as_json=as_json, repair=repair)


@app.command()
def status(as_json: Json = False, params: Params = "params.yaml") -> None:
    """Production and staging versions, pending forget requests, the newest revision, a
    half-done registry write, and whether the Prefect server is reachable."""
    import json

    from medunlearn import registry_cli

    state = registry_cli.status(params)
    if as_json:
        print(json.dumps(state, indent=2, default=str))
    else:
        registry_cli.print_status(state)


@app.command()
def promote(
    model: str,
    version: str,
    to: Annotated[Promotable, typer.Option("--to", help="target stage")],
    by: Annotated[str, typer.Option("--by", help="who promotes (recorded in the tag)")],
    why: Annotated[str, typer.Option("--why", help="why (recorded in the tag)")],
    allow_regression: Annotated[
        str | None, typer.Option("--allow-regression", metavar="REASON")
    ] = None,
    accept: Annotated[
        str | None,
        typer.Option(
            "--accept",
            metavar="REASON",
            help="promote to production although the card lists caveats (recorded)",
        ),
    ] = None,
    params: Params = "params.yaml",
) -> None:
    """Assign a version to staging or production (refusals exit 2, naming the rule)."""
    from medunlearn import registry_cli

    registry_cli.run(
        "promote",
        params,
        model=model,
        version=version,
        to=to.value,
        by=by,
        why=why,
        allow_regression=allow_regression,
        accept=accept,
    )


@app.command()
def rollback(
    model: str,
    stage: Annotated[Stage, typer.Option("--stage")],
    by: Annotated[str, typer.Option("--by", help="who rolls back (recorded in the tag)")],
    to: Annotated[str | None, typer.Option("--to", help="version (default: the previous)")] = None,
    why: Annotated[str, typer.Option("--why", help="why (recorded in the tag)")] = "rollback",
    allow_regression: Annotated[
        str | None,
        typer.Option(
            "--allow-regression",
            metavar="REASON",
            help="serve a version that predates applied forget requests (recorded in the tag)",
        ),
    ] = None,
    params: Params = "params.yaml",
) -> None:
    """Assign the stage's previous (or the named) version again; production files restored.

    Production obeys promote's forget-regression rule (exit 2 without --allow-regression)."""
    from medunlearn import registry_cli

    registry_cli.run(
        "rollback",
        params,
        model=model,
        stage=stage.value,
        to=to,
        by=by,
        why=why,
        allow_regression=allow_regression,
    )


@app.command()
def reproduce(
    model: str,
    version: str,
    tolerance: Annotated[
        float, typer.Option(help="largest |recorded - reproduced| that agrees")
    ] = 0.0,
    keep: Annotated[bool, typer.Option("--keep", help="keep the scratch worktree")] = False,
    as_json: Json = False,
    params: Params = "params.yaml",
) -> None:
    """Re-run a revision from its commit, data version and params; compare its metrics."""
    from medunlearn import registry_cli

    registry_cli.run(
        "reproduce",
        params,
        model=model,
        version=version,
        tolerance=tolerance,
        keep=keep,
        as_json=as_json,
    )


@app.command()
def card(
    model: str,
    version: str,
    as_json: Json = False,
    params: Params = "params.yaml",
) -> None:
    """A revision's card with its promotion history up to now (the committed card.md is
    the one written at registration)."""
    from medunlearn import registry_cli

    registry_cli.run("card", params, model=model, version=version, as_json=as_json)


@app.command()
def audit(
    model: str,
    version: str,
    reference_models: Annotated[
        int,
        typer.Option(
            "--reference-models",
            "-k",
            help=(
                "K: retrains without the forgotten rows that calibrate each example (>= 1; "
                "with K = 1 the verdict is 'underpowered')"
            ),
        ),
    ] = 4,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", help="train the references this many epochs (default: the recipe's)"
        ),
    ] = None,
    as_json: Json = False,
    params: Params = "params.yaml",
) -> None:
    """Per-example membership audit (offline LiRA) of a revision against K reference models;
    written next to its record and shown on its card. Refusals exit 1."""
    from flows.audit import run as run_audit

    run_audit(model, version, reference_models, epochs, params, as_json)


@request_app.command("add")
def request_add(
    file: Annotated[Path, typer.Argument(help="request YAML/JSON")],
    params: Params = "params.yaml",
) -> None:
    """Append a forget request to the ledger as pending."""
    from medunlearn import ledger_cli

    ledger_cli.run("add", params, file=str(file))


@request_app.command("list")
def request_list(as_json: Json = False, params: Params = "params.yaml") -> None:
    """Every request in the ledger and its status."""
    from medunlearn import ledger_cli

    ledger_cli.run("list", params, as_json=as_json)


@request_app.command("reject")
def request_reject(
    request_id: Annotated[str, typer.Argument(help="the request's ledger id")],
    by: Annotated[str, typer.Option("--by", help="who rejects it")],
    why: Annotated[str, typer.Option("--why", help="why")],
    params: Params = "params.yaml",
) -> None:
    """Reject a pending request, or one applied only in revisions never in production (e.g.
    a drift request whose candidate was not promoted): later revisions stop carrying it."""
    from medunlearn import ledger_cli

    ledger_cli.run("reject", params, request_id=request_id, by=by, why=why)


def main(argv: list[str] | None = None) -> None:
    """Entry point; ``argv`` (without the program name) for tests and scripts. Usage errors
    exit 2 with Typer's message; success returns instead of exiting, so callers go on."""
    from medunlearn.refusal import quiet_refusals

    args = list(sys.argv[1:] if argv is None else argv)
    check_settings(args)
    quiet_refusals()  # every command: a refusal is said once, by the command, in one line
    try:
        app(args=args, prog_name="medunlearn")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def params_path(args: list[str]) -> tuple[str, bool]:
    """The ``--params`` file a command line names (``--params F`` or ``--params=F``) and
    whether it was named; else ``params.yaml``."""
    for i, arg in enumerate(args):
        if arg == "--params" and i + 1 < len(args):
            return args[i + 1], True
        if arg.startswith("--params="):
            return arg.split("=", 1)[1], True
    return "params.yaml", False


def check_settings(args: list[str]) -> None:
    """Load and check the params file once, before any command runs: a bad setting is
    refused in one line (exit 1) naming the file and key, before any data is read. A
    command line without ``--params`` outside a project (no ``params.yaml``) is not checked.
    ``--help`` is never blocked."""
    from medunlearn.config import ConfigError, load_params

    if not args or any(a in ("--help", "-h") for a in args):
        return
    path, named = params_path(args)
    if not named and not Path(path).is_file():
        return
    try:
        load_params(path)
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT)  # the environment, not a bug: one line


def run() -> None:
    """Console entry point (``medunlearn``, ``python -m flows.cli``): :func:`main`, then
    :func:`exit_process` with its status. An exception other than ``SystemExit`` propagates
    (traceback, normal exit), except a :class:`~medunlearn.errors.Refusal` (one line, its
    ``exit_code``) and a full disk or quota (one line naming the file, exit 1)."""
    from medunlearn.errors import Refusal

    try:
        main()
    except SystemExit as exc:
        exit_process(exc.code)
    except Refusal as exc:  # one line naming the file, row, column or key; no traceback
        print(f"refused: {exc}", file=sys.stderr)
        exit_process(exc.exit_code)
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"refused: {exc.strerror}{where}; free space and run again", file=sys.stderr)
        exit_process(1)
    exit_process(0)


def exit_process(code: int | str | None) -> None:
    """End the process without the interpreter's module teardown.

    Tearing down the imported stack (torch, MONAI, Prefect, Great Expectations, ...) costs
    about 2 s per command on 2 cores (measured 2026-12-02: ``import flows.maintenance`` then
    exit 8.1-9.0 s, with ``os._exit`` 6.2-6.3 s), for nothing: every file is written and
    closed by then. Everything a normal exit does before the teardown still runs, in the
    same order: threading's exit hooks (Prefect's log and event workers drain there) and the
    join of every non-daemon thread (``threading._shutdown``), then the ``atexit`` functions
    (a temporary Prefect server stops, ``logging`` flushes). The standard library has no
    public call for "exit, skip the teardown": both are CPython's own functions.
    """
    if isinstance(code, str):  # SystemExit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (``| head``)
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
