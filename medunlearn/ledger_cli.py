"""``medunlearn request add FILE | list``: the forget ledger from the command line.

    medunlearn request add requests/withdraw_consent.yaml   # appended as pending
    medunlearn request list [--json]                        # every request and its status
    medunlearn request reject ID --by NAME --why TEXT       # a reviewer says no
    medunlearn revise                                       # processes every pending one

Reads the ``ledger`` section of ``--params`` (default params.yaml); paths are relative to
the folder that holds it. Identifiers are stored as salted tokens (``medunlearn.revision.ledger``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medunlearn.config import load_params, project_root
from medunlearn.data.request import (
    ForgetRequest,
    RequestError,
    check_request,
)
from medunlearn.revision.ledger import Ledger, LedgerError, active_ledger, track_salt
from medunlearn.revision.privacy import check_project_text


def open_ledger(params_path: str) -> Ledger:
    params = load_params(params_path)
    section = dict(params.get("ledger") or {})
    if not section.get("enabled", False):
        raise LedgerError(f"{params_path}: ledger.enabled is false")
    return active_ledger(params, project_root(params_path))


def check_against_data(params_path: str, request: ForgetRequest, file: str) -> None:
    """Refuse a request ``revise`` would refuse before it enters the ledger (it selects no
    training row of ``maintain.dataset``, or too many): the same
    :func:`~medunlearn.data.request.check_request`.

    Raises:
        RequestError: the request does not fit the data, or the dataset is not prepared.
    """
    from medunlearn.data.manifest import read_manifest_csv

    params = load_params(params_path)
    dataset = (params.get("maintain") or {}).get("dataset", "data/demo")
    manifest_path = project_root(params_path) / dataset / "manifest.csv"
    if not manifest_path.is_file():
        raise RequestError(
            f"{file}: cannot check it against the data: {manifest_path} does not exist "
            "(run `medunlearn prepare` first)"
        )
    from medunlearn.data.manifest import ManifestError

    try:
        manifest = read_manifest_csv(manifest_path)
    except ManifestError as exc:
        raise RequestError(f"{file}: cannot check it against the data: {exc}") from exc
    try:
        check_request(manifest, request, params.get("validation"))
    except RequestError as exc:
        raise RequestError(f"{file}: {exc}") from exc


def run(
    action: str,
    params_path: str,
    file: str | None = None,
    as_json: bool = False,
    request_id: str | None = None,
    by: str = "",
    why: str = "",
) -> None:
    """``add`` a request file as pending, ``list`` the ledger, or ``reject`` a request;
    refused input (``add``) exits 1, a ledger rule's refusal (``reject``) 2."""
    try:
        ledger = open_ledger(params_path)
        if action == "reject":
            check_project_text(params_path, {"--why": why})
            print(reject(ledger, params_path, str(request_id), by, why))
            return
        if action == "add":
            request = ForgetRequest.load(file or "")
            check_against_data(params_path, request, file or "")
            entry = ledger.add(request)
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
        for col in ("model", "reason", "received", "status"):
            table.add_column(col, overflow="fold")
        for e in entries:  # every model's; "any": written before entries named a model
            table.add_row(
                e["id"], e.get("model") or "any", e["reason"], e["received_at"], e["status"]
            )
        console = Console()
        console.width = max(console.width, 110)  # ids whole, even in an 80-column terminal
        console.print(table)
    except (LedgerError, RequestError) as exc:
        print(f"request {action} refused: {exc}", file=sys.stderr)
        # a request file that is refused is bad input (1); reject's rules say no (2)
        raise SystemExit(1 if action == "add" else 2) from exc


def reject(ledger: Ledger, params_path: str, request_id: str, by: str, why: str) -> str:
    """A reviewer's no: the request ends ``rejected: by NAME: WHY`` and is no longer carried
    by later revisions (e.g. a drift-triggered device deprecation whose candidate was not
    promoted). Pending requests, and requests applied only in revisions that never served
    in production, can be rejected; one that production served stays (a model that served
    without those rows must not get them back by a status change). The ledger file is
    committed alone when the registry is on. Raises ``LedgerError`` naming the rule."""
    from medunlearn.revision.registry import active_registry

    if not by.strip() or not why.strip():
        raise LedgerError("a rejection names who rejects (--by) and why (--why)")
    entry = next((e for e in ledger.entries() if e["id"] == request_id), None)
    if entry is None:
        raise LedgerError(f"{ledger.path}: no request {request_id}")
    if entry["status"].startswith("rejected"):
        raise LedgerError(f"request {request_id} is already {entry['status']}")
    params = load_params(params_path)
    registry, _ = active_registry(params, project_root(params_path))
    if registry is not None:  # whatever the status says: a resubmitted request can be
        # pending again while a served version carries it
        model = str((params.get("registry") or {}).get("model", "classifier"))
        served = {e.version for e in registry.events(model) if e.stage == "production"}
        carrying = [
            v
            for v in registry.versions(model)
            if any(r.get("id") == request_id for r in registry.record(model, v).get("requests", []))
        ]
        if served & set(carrying):
            raise LedgerError(
                f"request {request_id} was applied in {sorted(served & set(carrying))}, which "
                f"served in production: it stays applied"
            )
    ledger.set_status([request_id], f"rejected: by {by.strip()}: {why.strip()}")
    if registry is not None:
        registry.commit_files(
            [ledger.path], f"ledger: request {request_id} rejected by {by.strip()}"
        )
    return f"{request_id}: rejected by {by.strip()} (no longer carried by later revisions)"


def rejected_requests(params_path: str, record: dict) -> list[str]:
    """Ids of the requests a revision ``record`` carries that the ledger now says are
    rejected (``medunlearn request reject``): such a revision must not be promoted."""
    ledger = active_ledger(load_params(params_path), project_root(params_path))
    if ledger is None:
        return []
    status = {e["id"]: e["status"] for e in ledger.entries()}
    carried = [r.get("id") for r in record.get("requests", [])]
    return [i for i in carried if str(status.get(i, "")).startswith("rejected")]
