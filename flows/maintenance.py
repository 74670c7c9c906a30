"""Flow ``maintenance``: a forget request in, a validated, gated, exported revision out.

Steps: plan -> load-revision-inputs -> validate-data (Great Expectations) ->
unlearn-candidate (one per sweep entry, cached) -> compose-candidates ->
evaluate-candidates (gates) -> recheck-carried -> export-onnx -> write-revision-report ->
register-revision (the last four in ``flows/revision_steps.py``). No candidate passing: the
report is written, nothing exported, the run fails. Runs: ``revise-<request>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.naming import revision_run_name
from flows.revision_steps import (
    Evaluated,
    outcome,
    publish,
    refuse,
    select_keeping,
    unlearning_sweep,
)
from flows.settlement import revise_on_drift, revise_pending, settled
from medunlearn.revision.candidates import request_cohorts, run_timings
from medunlearn.revision.plan import StepClock, plan_revision
from medunlearn.unlearn.sweep import revision_sweep
from tasks.compose_candidates import compose_candidates
from tasks.evaluate_candidates import evaluate_candidates
from tasks.load_revision_inputs import load_revision_inputs
from tasks.validate_data import validate_data


@flow(name="maintenance", flow_run_name=revision_run_name, log_prints=True)
def maintenance_flow(
    params_path: str = "params.yaml",
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
    ledger_id: str | None = None,
    pending: bool = False,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One revision, every pending ledger request, or what a drift finding becomes.

    Pending and drift runs that find nothing to do succeed and touch no file; a refused
    request fails the run after the others ran.

    Args:
        params_path: the params file.
        request: a forget request file or mapping (default ``maintain.request``).
        refresh_cache: recompute every sweep run and the manifest validation.
        ledger_id: a pending ledger request's id to revise.
        pending: every pending ledger request (the ``maintenance/scheduled`` deployment).
        drift: a ``medunlearn.data.drift.detected`` payload (the ``maintenance/on-drift``
            deployment), decided under ``drift.on_device_drift``.

    Returns:
        The revision (``version``, ``selected``, ``summary``, ``candidates``, ...), or
        ``status`` with ``revisions`` (pending) or the drift decision.
    """
    if drift is not None:
        return revise_on_drift(params_path, drift, refresh_cache, revise_request)
    if pending:
        return revise_pending(params_path, refresh_cache, revise_request)
    return settled(revise_request, params_path, request, refresh_cache, ledger_id)


def revise_request(
    params_path: str = "params.yaml",
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
    ledger_id: str | None = None,
    clock: StepClock | None = None,
) -> dict[str, Any]:
    """Run one revision; ``request`` (a file or a mapping) overrides ``maintain.request``.

    With the registry and the forget ledger on, the request is (added to and) taken from the
    ledger and every applied request is kept: re-checked by its own gates on the selected
    candidate, its rows never retained (``medunlearn.revision.plan``). The entry ends
    ``applied in VERSION`` or ``rejected: ...``.

    Args:
        params_path: the params file.
        request: a forget request file or mapping (default ``maintain.request``).
        refresh_cache: recompute every sweep run and the manifest validation.
        ledger_id: a pending ledger request's id to revise.
        clock: the caller's step clock, so it can say which step a crash was in (default:
            a new one).

    Returns:
        ``revision_id``, ``version`` (None: unregistered), ``files``, ``selected``,
        ``summary`` (Markdown), ``export``, ``candidates``, ``baseline`` (the untouched
        deployed model under the same gates) and ``timings`` (seconds per step,
        overhead).

    Raises:
        GatesFailed: no candidate passed the gates (raised by
            :func:`flows.revision_steps.refuse`, after the report is written).
    """
    logger = get_run_logger()
    clock = clock or StepClock()  # the caller's, so it can say which step a crash was in
    plan = plan_revision(params_path, request, ledger_id, logger)
    inputs = load_revision_inputs(
        plan.maintain["dataset"], plan.deployed_path, plan.request, plan.manifest
    )
    plan.adopt(inputs.request)
    clock.lap("load")
    maintain, reports, work_dir = plan.maintain, plan.reports, plan.work_dir
    data, cohorts = validate_data(
        inputs,
        plan.validation,
        reports["validation"],
        float(maintain.get("max_in_memory_mb", 1024)),
        str(Path(work_dir) / "validation"),
        refresh=refresh_cache,
    )
    clock.lap("validate")
    # the new request's reason, plus those of earlier requests forgotten again here (an
    # inherited request is only re-checked: the parent's weights already forgot it)
    reasons = [inputs.request.reason, *(r.reason for _, r in plan.carried)]
    configs = revision_sweep(maintain, plan.unlearn, reasons)
    runs, failed = unlearning_sweep(plan, inputs, cohorts, configs, refresh_cache)
    clock.lap("unlearn")
    composed = compose_candidates(runs, cohorts, maintain.get("compose", {}), work_dir)
    failed += [c for c in composed if c.get("failed")]
    composed = [c for c in composed if not c.get("failed")]
    clock.lap("compose")
    candidates = [{**r, "kind": "sweep"} for r in runs] + composed
    # the new request's gates see its own rows (earlier ones are re-checked separately)
    evidence = request_cohorts(cohorts, inputs.request) if inputs.request.carried else cohorts
    before, baseline, results, seconds = evaluate_candidates(
        inputs, evidence, candidates, plan.bounds
    )
    clock.lap("evaluate")

    def timings() -> dict[str, Any]:
        return run_timings(clock.laps, runs, composed, seconds, clock.started_at)

    selected, rechecks = select_keeping(plan, results, candidates, inputs, cohorts)
    evaluated = Evaluated(cohorts, before, baseline, results, failed, timings)
    if selected is None:
        refuse(plan, evaluated, inputs.request.reason)
    revision, export, summary = publish(
        plan, inputs, data, evaluated, selected, candidates, rechecks, clock
    )
    return outcome(revision, export, summary, selected, results, baseline, timings())
