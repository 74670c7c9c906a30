"""The registry's commands.

``show``, ``registry``, ``status``, ``promote``, ``rollback``, ``reproduce``, ``card``,
``audit``.

What each does is in the core (``medunlearn.revision.actions``, ``reproduce``, ``card``,
``flows/audit.py``); here it is parsed and printed. A rule that says no is a refusal: one
line naming the rule, exit 1. Reads the ``registry``, ``promotion`` and ``ledger`` sections
of ``--params`` and works on the repository that holds it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.app import JsonFlag, ParamsFile, Promotable, Stage, app, emit


@app.command()
def show(
    checkpoint: Annotated[list[Path], typer.Argument(help="checkpoint files")],
    as_json: JsonFlag = False,
) -> None:
    """Print checkpoint metadata (architecture, classes, data version, metrics)."""
    from dataclasses import asdict

    from medunlearn.models.checkpoint import describe, read_metadata

    metas = [(path, read_metadata(path)) for path in checkpoint]
    if as_json:
        emit([{"path": str(p), **asdict(m)} for p, m in metas], True)
    else:
        for path, meta in metas:
            print(describe(meta, path))


@app.command()
def registry(
    model: Annotated[str | None, typer.Argument(help="one model (default: all)")] = None,
    as_json: JsonFlag = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            metavar="",
            help="finish or undo a registry write a killed run left half done",
        ),
    ] = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Each model's versions, stages, parent, request reason and headline metrics."""
    from medunlearn.revision.actions import listing, open_registry

    found = open_registry(params)
    if model is not None and model not in found.models():
        flags = {"true", "false", "yes", "no", "1", "0", "on", "off"}
        if model.lower() in flags:  # `registry --json true`: the value became MODEL
            raise typer.BadParameter(
                f"unknown model '{model}'; --json takes no value (write --json alone)",
                param_hint="MODEL",
            )
    if repair:
        did = found.repair()
        print(
            f"registry repaired: {did}" if did else "registry consistent: nothing to do",
            file=sys.stderr if as_json else sys.stdout,
        )
    elif found.interrupted() or found.orphans():
        print(
            "warning: a killed run left a registry write half done; run "
            "`medunlearn registry --repair` (the next revise does it too)",
            file=sys.stderr,
        )
    rows = listing(found, model)
    if as_json:
        emit(rows, True)
    else:
        print_table(rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The registry listing as a rich table.

    Args:
        rows: :func:`medunlearn.revision.actions.listing`'s rows.
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title="model registry")
    for col in ("model", "version", "stage", "parent", "reason", "metrics", "notes"):
        table.add_column(col)
    for r in rows:
        notes = []
        if not r["pushed"]:
            notes.append(f"unpushed: {r['push_command']}")
        notes += [f"CAVEAT: {c}" for c in r["caveats"]]
        if r["regression"]:
            notes.append("REGRESSION: lacks applied request(s) " + ", ".join(r["regression"]))
        if r["not_yet_served"]:
            notes.append(
                "serving without request(s) applied in later revisions: "
                + ", ".join(r["not_yet_served"])
                + " (promote to serve them)"
            )
        table.add_row(
            r["model"],
            r["version"],
            ", ".join(r["stages"]) or "-",
            r["parent"] or "-",
            ", ".join(str(x) for x in r["reasons"]),
            " ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()),
            "; ".join(notes),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@app.command()
def status(as_json: JsonFlag = False, params: ParamsFile = "params.yaml") -> None:
    """Production and staging versions, pending requests, the newest revision.

    Also a registry write a killed run left half done, and whether the Prefect
    server is reachable.
    """
    from medunlearn.revision.actions import status as project_status

    state = project_status(params)
    if as_json:
        emit(state, True)
    else:
        print_status(state)


@app.command()
def promote(
    model: str,
    version: str,
    to: Annotated[Promotable, typer.Option("--to", help="target stage")],
    by: Annotated[str, typer.Option("--by", help="who promotes (recorded in the tag)")],
    why: Annotated[str, typer.Option("--why", help="why (recorded in the tag)")],
    allow_regression: Annotated[
        str | None,
        typer.Option(
            "--allow-regression",
            metavar="REASON",
            help="serve a version that lacks applied forget requests (recorded)",
        ),
    ] = None,
    accept: Annotated[
        str | None,
        typer.Option(
            "--accept",
            metavar="REASON",
            help="promote to production although the card lists caveats (recorded)",
        ),
    ] = None,
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Assign a version to staging or production (a refusal names the rule, exit 1)."""
    from medunlearn.revision import actions

    out = actions.promote(
        actions.open_registry(params),
        params,
        model,
        version,
        to.value,
        by,
        why,
        allow_regression,
        accept,
    )
    verb = "already in" if out["unchanged"] else "promoted to"
    emit(out, as_json, lambda o: f"{o['model']} {o['version']} {verb} {o['stage']}")


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
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Assign the stage's previous (or the named) version again; production files restored.

    Production obeys promote's forget-regression rule (refused without
    [bold]--allow-regression[/]).
    """
    from medunlearn.revision import actions

    out = actions.rollback(
        actions.open_registry(params),
        params,
        model,
        stage.value,
        to,
        by,
        why,
        allow_regression,
    )
    where = f"; files at {out['serving_dir']}" if out["served"] else ""
    emit(out, as_json, lambda o: f"{o['model']} {o['stage']}: {o['from']} -> {o['to']}{where}")
    if out["regression"]:
        print(
            f"warning: forget regression allowed: {out['to']} lacks applied "
            f"request(s) {', '.join(out['regression'])} (recorded in the tag); "
            "`medunlearn registry` flags it",
            file=sys.stderr,
        )
    elif out.get("lacks"):  # a staging or candidate rollback: not in force yet
        print(
            f"note: {out['to']} lacks applied request(s) {', '.join(out['lacks'])}; "
            "promoting it to production needs --allow-regression REASON",
            file=sys.stderr,
        )


@app.command()
def reproduce(
    model: str,
    version: str,
    tolerance: Annotated[
        float, typer.Option(help="largest |recorded - reproduced| that agrees")
    ] = 0.0,
    keep: Annotated[
        bool, typer.Option("--keep", metavar="", help="keep the scratch worktree")
    ] = False,
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Re-run a revision from its commit, data version and params.

    Its metrics are compared with the recorded ones; exit 1 when one
    does not agree.
    """
    from medunlearn.revision.actions import open_registry
    from medunlearn.revision.reproduce import reproduce as reproduce_version

    out = reproduce_version(open_registry(params), model, version, tolerance, keep)

    def text(o: dict[str, Any]) -> str:
        lines = [
            f"{r['metric']:28s} recorded {r['recorded']!s:22s} reproduced "
            f"{r['reproduced']!s:22s} {'agree' if r['agree'] else 'DIFFER'}"
            for r in o["rows"]
        ]
        verdict = "reproduced" if o["agree"] else "NOT reproduced"
        lines.append(
            f"{model} {version} ({o['stage']} at {o['commit'][:10]}): {verdict} within {tolerance}"
        )
        return "\n".join(lines)

    emit(out, as_json, text)
    if not out["agree"]:
        raise SystemExit(1)


@app.command()
def card(
    model: str,
    version: str,
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """A revision's card with its promotion history up to now.

    The committed card.md is the one written at registration.
    """
    from medunlearn.revision.actions import open_registry
    from medunlearn.revision.audit import read_audit
    from medunlearn.revision.card import card_json, card_markdown

    found = open_registry(params)
    content = card_json(
        found.record(model, version),
        found.history(model, version),
        read_audit(found, model, version),
    )
    emit(content, as_json, card_markdown)


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
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Per-example membership audit (offline LiRA) of a revision.

    Against K reference models; written next to its record and shown on its card.
    """
    from flows.audit import run_audit

    emit(run_audit(params, model, version, reference_models, epochs), as_json, audit_summary)


def audit_summary(result: dict[str, Any]) -> str:
    """The audit in a few lines (``--json`` prints all of it).

    Args:
        result: ``flows.audit.audit_flow``'s result.

    Returns:
        Three lines of text.
    """
    written = result["written"]
    where = written["path"] + (
        " (committed)" if written["committed"] else f" (not committed: {written['why_not']})"
    )
    return "\n".join(
        [
            f"audit {result['model']} {result['version']}: offline LiRA, "
            f"{result['n_references']} reference models (seeds "
            f"{', '.join(map(str, result['seeds']))}; {result['epochs']} epoch(s); "
            f"{result['trained_now']} trained now, {result['from_cache']} from the cache), "
            f"{result['n_members']} of {result['n_forget_train']} forgotten rows vs "
            f"{result['n_nonmembers']} matched held-out rows",
            f"  {result['status']}: {result['verdict']}",
            f"  written: {where}; {result['seconds']:.1f} s",
        ]
    )


def print_status(state: dict[str, Any]) -> None:
    """The project's status for a person: one line per model, the serving folder, the server.

    Args:
        state: :func:`medunlearn.revision.actions.status`'s result.
    """
    print(f"project {state['project']}")
    if not state["models"]:
        print("  no registered model yet (medunlearn train registers the first)")
    for m in state["models"]:
        stages = ", ".join(f"{k} {v or '-'}" for k, v in m["stages"].items())
        pending = m["pending_requests"]
        print(
            f"  {m['model']}: {stages}; latest {m['latest']} ({m['latest_registered_at']}); "
            f"{len(pending)} pending request(s)" + (f": {', '.join(pending)}" if pending else "")
        )
    served = state["serving"]
    print(f"  serving: {served['model']} {served['version']}" if served else "  serving: nothing")
    if state["registry_write_half_done"]:
        print("  a killed run left a registry write half done: medunlearn registry --repair")
    server = state["prefect_server"]
    if server["url"] is None:
        print("  Prefect: no PREFECT_API_URL (each command starts a temporary server)")
    else:
        print(
            f"  Prefect: {server['url']} {'reachable' if server['reachable'] else 'NOT reachable'}"
        )
