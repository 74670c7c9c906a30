"""The forget ledger's commands: ``request add | list | reject``.

    medunlearn request add requests/withdraw_consent.yaml   # appended as pending
    medunlearn request list [--json]                        # every request and its status
    medunlearn request reject ID --by NAME --why TEXT       # a reviewer says no
    medunlearn revise                                       # processes every pending one

Reads the ``ledger`` section of ``--params``; paths are relative to the folder that holds
it. Identifiers are stored as salted tokens (``medunlearn.revision.ledger``). A refused
request file or a ledger rule that says no: one line, exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.app import JsonFlag, ParamsFile, emit, request_app


@request_app.command("add")
def request_add(
    file: Annotated[Path, typer.Argument(help="request YAML/JSON")],
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Append a forget request to the ledger as pending (checked against the data first)."""
    from medunlearn.revision.actions import add_request

    entry, why = add_request(params, str(file))
    emit(entry, as_json, lambda e: f"{e['id']} ({e['reason']}): {e['status']}")
    if why:
        print(f"warning: ledger salt not tracked by DVC ({why})", file=sys.stderr)


@request_app.command("list")
def request_list(as_json: JsonFlag = False, params: ParamsFile = "params.yaml") -> None:
    """Every request in the ledger and its status."""
    from medunlearn.revision.actions import open_ledger

    ledger = open_ledger(params)
    entries = ledger.entries()
    if as_json:
        emit(entries, True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"forget ledger ({ledger.path})")
    table.add_column("id", no_wrap=True, min_width=20)  # ids are copied into commands
    for col in ("model", "reason", "received", "status"):
        table.add_column(col, overflow="fold")
    for e in entries:  # every model's; "any": written before entries named a model
        table.add_row(e["id"], e.get("model") or "any", e["reason"], e["received_at"], e["status"])
    console = Console()
    console.width = max(console.width, 110)  # ids whole, even in an 80-column terminal
    console.print(table)


@request_app.command("reject")
def request_reject(
    request_id: Annotated[str, typer.Argument(help="the request's ledger id")],
    by: Annotated[str, typer.Option("--by", help="who rejects it")],
    why: Annotated[str, typer.Option("--why", help="why")],
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Reject a request never in production; later revisions stop carrying it.

    A request applied only in revisions never in production can be rejected
    too (e.g. a drift request whose candidate was not promoted).
    """
    from medunlearn.revision.actions import open_ledger, reject_request

    line = reject_request(open_ledger(params), params, request_id, by, why)
    emit({"id": request_id, "status": "rejected", "message": line}, as_json, lambda r: line)
