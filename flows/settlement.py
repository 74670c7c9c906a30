"""How the maintenance flow settles its requests.

One request's outcome in the ledger, every pending request in turn, and a drift finding
turned into a request.

A ledger request the run tried is never left ``pending``: refused by its gates or its data
it ends ``rejected: ...``; crashed, ``failed: STEP (ERROR)``; either is committed at once.
A settings error, a wrong deployed checkpoint or a busy registry is nobody's request's
fault: the request stays pending for the next run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from medunlearn.config import load_params, project_root
from medunlearn.data.drift import request_from_finding
from medunlearn.data.expectations import ValidationFailed
from medunlearn.data.manifest import ManifestError
from medunlearn.data.request import ForgetRequest, RequestError
from medunlearn.errors import Refusal
from medunlearn.evidence.gates import GateConfigError
from medunlearn.models.checkpoint import CheckpointError
from medunlearn.revision.candidates import GatesFailed
from medunlearn.revision.ledger import AlreadyApplied, LedgerError, active_ledger
from medunlearn.revision.plan import StepClock, settle
from medunlearn.revision.registry import RegistryBusy, active_registry
from medunlearn.unlearn.methods import MethodConfigError
from medunlearn.unlearn.sweep import SweepError

Revise = Callable[..., dict[str, Any]]
BAD_INPUT = (ManifestError, ValidationFailed, LedgerError, RequestError)
SETTINGS_ERRORS = (SweepError, MethodConfigError, GateConfigError)
NOT_THE_REQUESTS = (*SETTINGS_ERRORS, CheckpointError, RegistryBusy)


def settled(
    revise: Revise,
    params_path: str,
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
    ledger_id: str | None = None,
) -> dict[str, Any]:
    """``revise(...)``, after which a ledger request the run tried is never left pending.

    The status names the error's kind and the step only: messages can name rows, and the
    ledger is in git.

    Args:
        revise: the maintenance flow's ``revise_request``.
        params_path: the params file.
        request: a request file or mapping, or None.
        refresh_cache: recompute every sweep run and the validation.
        ledger_id: a pending ledger entry, or None.

    Returns:
        ``revise``'s result.

    Raises:
        Exception: whatever ``revise`` raised, after the ledger entry was settled.
    """
    clock = StepClock()
    try:
        return revise(params_path, request, refresh_cache, ledger_id, clock)
    except AlreadyApplied:
        raise
    except NOT_THE_REQUESTS:
        raise
    except Exception as exc:
        if isinstance(exc, GatesFailed):
            status = "rejected: no candidate passed the gates (see the revision report)"
        elif isinstance(exc, BAD_INPUT):
            status = f"rejected: {type(exc).__name__} (see the run's log)"
        else:
            status = f"failed: {clock.running()} ({type(exc).__name__})"
        logger = get_run_logger()
        try:
            settle(params_path, request, ledger_id, status, logger)
        except Exception as problem:  # noqa: BLE001 - never hide the run's own error
            logger.warning("ledger status %r not recorded: %s", status, problem)
        raise


def revise_pending(params_path: str, refresh_cache: bool, revise: Revise) -> dict[str, Any]:
    """Every pending ledger request in the order received, one revision each.

    One bad (or crashing) request never blocks the ones after it.

    Args:
        params_path: the params file.
        refresh_cache: recompute every sweep run and the validation.
        revise: the maintenance flow's ``revise_request``.

    Returns:
        ``status`` (``nothing to do`` or ``revised``) and ``revisions``.

    Raises:
        RuntimeError: a request crashed (after the others ran).
        GatesFailed: a request was refused (after the others ran).
    """
    logger = get_run_logger()
    params = load_params(params_path)
    root = project_root(params_path)
    registry, why_off = active_registry(params, root)
    ledger = active_ledger(params, root) if registry else None
    if ledger is None:
        why = why_off or "ledger.enabled is false"
        logger.info("nothing to do: no forget ledger (%s)", why)
        return {"status": "nothing to do", "why": f"no forget ledger ({why})", "revisions": []}
    jobs = ledger.pending()
    if not jobs:
        logger.info("nothing to do: no pending request in %s", ledger.path)
        return {"status": "nothing to do", "why": "no pending request", "revisions": []}
    revisions, refused, crashed = [], [], []
    for entry in jobs:
        try:
            revisions.append(settled(revise, params_path, None, refresh_cache, entry["id"]))
        except AlreadyApplied as exc:
            logger.info("nothing to do: %s", exc)
        except NOT_THE_REQUESTS:  # every request would fail
            raise
        except Refusal as exc:  # settled in the ledger as rejected; the queue goes on
            logger.error("request %s refused: %s: %s", entry["id"], type(exc).__name__, exc)
            refused.append(entry["id"])
        except Exception as exc:  # a crash: settled as failed, logged with its traceback
            logger.exception("request %s failed", entry["id"])
            crashed.append((entry["id"], exc))
    if crashed:
        ids = [i for i, _ in crashed]
        raise RuntimeError(
            f"{len(crashed)} of {len(jobs)} pending request(s) crashed: {ids}"
            + (f"; {len(refused)} refused: {refused}" if refused else "")
        ) from crashed[0][1]
    if refused:
        raise GatesFailed(f"{len(refused)} of {len(jobs)} pending request(s) refused: {refused}")
    return {"status": "revised", "revisions": revisions}


def revise_on_drift(
    params_path: str, payload: dict[str, Any], refresh_cache: bool, revise: Revise
) -> dict[str, Any]:
    """Apply the ``drift`` section's rule to one finding.

    The finding becomes a forget request revised now (registered as candidate, staging
    under ``promotion.auto_staging``; never production), or a recorded notification.

    Args:
        params_path: the params file.
        payload: a ``medunlearn.data.drift.detected`` event's payload.
        refresh_cache: recompute every sweep run and the validation.
        revise: the maintenance flow's ``revise_request``.

    Returns:
        ``status`` (``notified``, ``nothing to do`` or ``revised``) with the revision or why.
    """
    logger = get_run_logger()
    settings = dict(load_params(params_path).get("drift") or {})
    request, why = request_from_finding(payload, settings)
    if request is None:
        logger.warning("drift finding recorded, no revision: %s", why)
        create_markdown_artifact(
            key="drift-decision",
            markdown=f"# Drift finding: no revision\n\n{why}\n\n```json\n"
            f"{json.dumps(payload, indent=2, default=str)}\n```\n",
            description="what a drift finding became",
        )
        return {"status": "notified", "why": why, "finding": payload}
    logger.info("drift finding becomes a request: %s", request["note"])
    params = load_params(params_path)
    root = project_root(params_path)
    registry, _ = active_registry(params, root)
    ledger = active_ledger(params, root) if registry else None
    if ledger is None:
        return {"status": "revised", **revise(params_path, request, refresh_cache)}
    forget = ForgetRequest.from_dict(request, "drift finding")
    known = ledger.find(forget)
    if known is not None and known["status"] != "pending":  # never resubmitted by a drift
        why = f"request {known['id']} for this finding is already {known['status']}"
        logger.info("nothing to do: %s", why)
        return {"status": "nothing to do", "why": why, "finding": payload}
    entry = ledger.add(forget)
    return {"status": "revised", **settled(revise, params_path, None, refresh_cache, entry["id"])}
