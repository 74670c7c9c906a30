"""What ``medunlearn revise`` runs: one maintenance flow run per request.

The settings are checked once; then the named request, else every pending ledger request,
else ``maintain.request``, each in its own run named after it and tagged.
"""

from __future__ import annotations

from typing import Any

from prefect import tags

from flows.maintenance import maintenance_flow
from flows.runners import task_runner
from flows.settlement import SETTINGS_ERRORS
from medunlearn.config import load_params, load_section, project_root
from medunlearn.data.request import ForgetRequest
from medunlearn.revision.ledger import active_ledger
from medunlearn.revision.registry import active_registry
from medunlearn.unlearn.sweep import check_sweeps


def check_revision_settings(params_path: str) -> None:
    """Refuse bad sweep, method or gate settings before any request runs.

    Args:
        params_path: the params file.

    Raises:
        SweepError: a bad ``maintain.sweep`` (names the file and key).
        MethodConfigError: a bad method setting (names the file and key).
        GateConfigError: a bad ``gates`` setting (names the file and key).
    """
    try:
        check_sweeps(
            load_section("maintain", params_path),
            load_section("unlearn", params_path),
            load_section("gates", params_path),
        )
    except SETTINGS_ERRORS as exc:
        raise type(exc)(f"settings in {params_path}: {exc}") from None


def revision_jobs(params_path: str, request: str | None) -> list[tuple[str | None, str | None]]:
    """What ``medunlearn revise`` runs, one flow run per pair.

    ``request``, else every pending ledger request in the order received, else
    ``maintain.request``.

    Args:
        params_path: the params file.
        request: a forget request file, or None.

    Returns:
        ``(request file, ledger id)`` pairs, one flow run each.
    """
    params = load_params(params_path)
    registry, _ = active_registry(params, project_root(params_path))
    ledger = active_ledger(params, project_root(params_path)) if registry else None
    if ledger is not None and not request and ledger.pending():
        return [(None, e["id"]) for e in ledger.pending()]
    return [(request, None)]


def request_reason(params_path: str, request: str | None, ledger_id: str | None) -> str:
    """The reason of the request a run will revise (its tag), read before the run starts.

    Args:
        params_path: the params file.
        request: a forget request file, or None.
        ledger_id: a pending ledger request's id, or None.

    Returns:
        ``class_retirement``, ``device_deprecation``, ... (``request`` when unknown).

    Raises:
        RequestError: the request file is not a valid request (before any flow starts).
    """
    if ledger_id is not None:
        params = load_params(params_path)
        ledger = active_ledger(params, project_root(params_path))
        entry = (
            next((e for e in ledger.entries() if e["id"] == ledger_id), None) if ledger else None
        )
        return str(entry["reason"]) if entry else "request"
    wanted = request or load_section("maintain", params_path).get("request")
    return ForgetRequest.load(wanted).reason if wanted else "request"


def run_revision(
    params_path: str, request: str | None, refresh_cache: bool, ledger_id: str | None
) -> dict[str, Any]:
    """One :func:`maintenance_flow` run on ``maintain.task_runner``.

    Tagged ``medunlearn`` and ``revise``.

    Args:
        params_path: the params file.
        request: a forget request file, or None (``ledger_id``, or ``maintain.request``).
        refresh_cache: recompute every sweep run and the validation.
        ledger_id: a pending ledger request's id, or None.

    Returns:
        The flow's result (``summary``, ``version``, ``candidates``, ...).
    """
    reason = request_reason(params_path, request, ledger_id)  # a bad file: refused here
    runner = task_runner(load_section("maintain", params_path))
    with tags("medunlearn", "revise", reason):
        return maintenance_flow.with_options(task_runner=runner)(
            params_path, request, refresh_cache, ledger_id
        )
