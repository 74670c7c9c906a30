"""``medunlearn request add FILE | list``: the forget ledger from the command line.

    medunlearn request add requests/withdraw_consent.yaml   # appended as pending
    medunlearn request list [--json]                        # every request and its status
    medunlearn revise                                       # processes every pending one

Reads the ``ledger`` section of ``--params`` (default params.yaml); paths are relative to
the folder that holds it. Identifiers are stored as salted tokens (``medunlearn.ledger``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medunlearn.config import load_params
from medunlearn.ledger import Ledger, LedgerError, track_salt
from medunlearn.unlearn.request import ForgetRequest, RequestError


def open_ledger(params_path: str) -> Ledger:
    params = load_params(params_path)
    section = dict(params.get("ledger") or {})
    if not section.get("enabled", False):
        raise LedgerError(f"{params_path}: ledger.enabled is false")
    root = Path(params_path).resolve().parent
    return Ledger(root / section.get("path", "ledger/requests.jsonl"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="medunlearn request",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("add", "list"))
    parser.add_argument("file", nargs="?", help="request file (add)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        ledger = open_ledger(args.params)
        if args.action == "add":
            if not args.file:
                parser.error("add needs a request FILE")
            entry = ledger.add(ForgetRequest.load(args.file))
            why = None if Path(f"{ledger.salt_path}.dvc").exists() else track_salt(ledger)
            print(f"{entry['id']} ({entry['reason']}): {entry['status']}")
            if why:
                print(f"warning: ledger salt not tracked by DVC ({why})", file=sys.stderr)
            return
        entries = ledger.entries()
        if args.json:
            print(json.dumps(entries, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"forget ledger ({ledger.path})")
        for col in ("id", "reason", "received", "status"):
            table.add_column(col)
        for e in entries:
            table.add_row(e["id"], e["reason"], e["received_at"], e["status"])
        Console().print(table)
    except (LedgerError, RequestError) as exc:
        print(f"request {args.action} refused: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
