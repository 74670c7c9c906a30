"""``medunlearn request add FILE | list``: the forget ledger from the command line.

    medunlearn request add requests/withdraw_consent.yaml   # appended as pending
    medunlearn request list [--json]                        # every request and its status
    medunlearn revise                                       # processes every pending one

Reads the ``ledger`` section of ``--params`` (default params.yaml); paths are relative to
the folder that holds it. Identifiers are stored as salted tokens (``medunlearn.ledger``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medunlearn.config import load_params, project_root
from medunlearn.ledger import Ledger, LedgerError, track_salt
from medunlearn.unlearn.request import ForgetRequest, RequestError


def open_ledger(params_path: str) -> Ledger:
    params = load_params(params_path)
    section = dict(params.get("ledger") or {})
    if not section.get("enabled", False):
        raise LedgerError(f"{params_path}: ledger.enabled is false")
    root = project_root(params_path)
    return Ledger(root / section.get("path", "ledger/requests.jsonl"))


def run(action: str, params_path: str, file: str | None = None, as_json: bool = False) -> None:
    """``add`` a request file as pending, or ``list`` the ledger; refusals exit 2."""
    try:
        ledger = open_ledger(params_path)
        if action == "add":
            entry = ledger.add(ForgetRequest.load(file or ""))
            why = None if Path(f"{ledger.salt_path}.dvc").exists() else track_salt(ledger)
            print(f"{entry['id']} ({entry['reason']}): {entry['status']}")
            if why:
                print(f"warning: ledger salt not tracked by DVC ({why})", file=sys.stderr)
            return
        entries = ledger.entries()
        if as_json:
            print(json.dumps(entries, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"forget ledger ({ledger.path})")
        table.add_column("id", no_wrap=True, min_width=20)  # ids are copied into commands
        for col in ("reason", "received", "status"):
            table.add_column(col, overflow="fold")
        for e in entries:
            table.add_row(e["id"], e["reason"], e["received_at"], e["status"])
        console = Console()
        console.width = max(console.width, 110)  # ids whole, even in an 80-column terminal
        console.print(table)
    except (LedgerError, RequestError) as exc:
        print(f"request {action} refused: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
