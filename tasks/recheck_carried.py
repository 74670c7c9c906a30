"""Step: re-check every earlier (carried) forget request on the selected candidate.

A later revision must keep every earlier forgetting; the new request's gates alone cannot
show that, so each applied request of the forget ledger is put through its own reason's
gate profile again (``medunlearn.revision.candidates.recheck_requests``).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.request import Cohorts
from medunlearn.revision.candidates import CandidateResult, recheck_requests
from tasks.compose_candidates import load_run
from tasks.load_revision_inputs import RevisionInputs


@task(name="recheck-carried", cache_policy=NO_CACHE)
def recheck_carried(
    selected: CandidateResult,
    candidates: list[dict[str, Any]],
    inputs: RevisionInputs,
    cohorts: Cohorts,
    carried: list[tuple[str, Any]],
    bounds: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Gate results per carried request id for the ``selected`` candidate.

    Args:
        selected: the selected candidate's result.
        candidates: every candidate record (the selected one's ``checkpoint`` is loaded).
        inputs: the revision's inputs (the deployed model: the retention baseline).
        cohorts: the new request's cohorts (the carried requests' are built from them).
        carried: ``(ledger id, request)`` of every earlier applied request.
        bounds: the params file's ``gates`` section.

    Returns:
        Per carried request id, its gate result as a mapping (``passed``, ``failed``,
        checks).

    Raises:
        StopIteration: no record in ``candidates`` has the selected candidate's name.
        CheckpointError: its checkpoint changed since it was written (raised by
            :func:`tasks.compose_candidates.load_run`).
    """
    run = next(c for c in candidates if c["name"] == selected.name)
    model, _ = load_run(run)
    out = recheck_requests(model, inputs.deployed, cohorts, carried, bounds)
    for request_id, gates in out.items():
        get_run_logger().info(
            "%s keeps earlier request %s: %s",
            selected.name,
            request_id,
            "pass" if gates["passed"] else f"FAIL ({', '.join(gates['failed'])})",
        )
    return out
