"""Flow run names, so each run in the Prefect UI says what it does.

A callable per flow, reading the run's parameters through ``prefect.runtime``.
"""

from __future__ import annotations

from pathlib import Path

from prefect.runtime import flow_run

from medunlearn.config import load_section


def revision_run_name() -> str:
    """The flow run's name, from the running flow's parameters.

    Returns:
        ``revise-<ledger id | request file stem | request reason | pending | drift>``; with
        no request named, ``maintain.request``'s stem.
    """
    p = flow_run.parameters or {}
    request = p.get("request")
    if p.get("drift") is not None:
        return "revise-drift"
    if p.get("pending"):
        return "revise-pending"
    if p.get("ledger_id"):
        return f"revise-{p['ledger_id']}"
    if isinstance(request, dict):
        return f"revise-{request.get('reason', 'request')}"
    if not request:  # maintain.request, as the flow will take it
        params_path = str(p.get("params_path") or "params.yaml")
        request = load_section("maintain", params_path).get("request")
    return f"revise-{Path(str(request)).stem}" if request else "revise"
