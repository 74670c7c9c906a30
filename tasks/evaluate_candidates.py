"""Step: metrics of every candidate on the held-out cohorts, and its gate profile.

First the held-out pool of the membership evidence is checked (``medunlearn.evidence.membership.choose_pool``:
a test split shifted from the validation split is left out). The deployed model is put
through the same profile (the *baseline*): if it already passes, the membership checks
could not tell its forgotten images from held-out ones, and the report says that the gates
then certify retention, not a change.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.request import Cohorts
from medunlearn.evidence.gates import evaluate_gates, resolve_bounds
from medunlearn.evidence.membership import choose_pool
from medunlearn.evidence.metrics import UnlearnMetrics, unlearning_metrics
from medunlearn.models.inference import LogitCache
from medunlearn.revision.candidates import CandidateResult, make_candidate
from tasks.compose_candidates import load_run
from tasks.load_revision_inputs import RevisionInputs


@task(name="evaluate-candidates", cache_policy=NO_CACHE)
def evaluate_candidates(
    inputs: RevisionInputs,
    cohorts: Cohorts,
    candidates: list[dict[str, Any]],
    bounds: dict[str, Any],
) -> tuple[UnlearnMetrics, dict[str, Any], list[CandidateResult], float]:
    """Metrics and gate results of the deployed model and of every candidate.

    Args:
        inputs: the revision's inputs (the request's reason, the deployed model).
        cohorts: the request's cohorts; the non-member pool is chosen here.
        candidates: finished candidate records (``name``, ``kind``, ``config``,
            ``checkpoint``, ``sha256``, ``seconds``).
        bounds: the params file's ``gates`` section.

    Returns:
        The deployed model's metrics (the gates' "before"), its own gate result (the
        baseline, with the pool check), each candidate's result, and the wall time spent
        computing them (seconds; the flow subtracts it to measure its overhead).

    Raises:
        CheckpointError: a candidate's checkpoint changed since it was written (raised by
            :func:`tasks.compose_candidates.load_run`).
    """
    logger = get_run_logger()
    start = time.perf_counter()
    reason = inputs.request.reason
    b = resolve_bounds(reason, bounds)
    deployed = LogitCache(inputs.deployed)  # one forward pass per split for both uses
    cohorts = choose_pool(
        cohorts, inputs.deployed, b["alpha"], b["mia_auc_margin"], predict=deployed
    )
    if cohorts.pool_check and cohorts.pool_check.get("excluded"):
        logger.info("non-member pool: val only, the test split is shifted (%s)", cohorts.pool_check)
    before = unlearning_metrics(inputs.deployed, cohorts, predict=deployed)
    baseline = evaluate_gates(reason, before, before, bounds).to_dict()
    baseline["pool_check"] = cohorts.pool_check
    logger.info(
        "deployed model on the %s profile: %s",
        reason,
        "passes" if baseline["passed"] else f"fails ({', '.join(baseline['failed'])})",
    )
    results = []
    for c in candidates:
        model, _ = load_run(c)
        after = unlearning_metrics(model, cohorts)
        gates = evaluate_gates(reason, after, before, bounds)
        results.append(
            make_candidate(
                c["name"],
                c.get("kind", "sweep"),
                c["config"],
                after,
                gates,
                c.get("seconds", 0.0),
                c["checkpoint"],
            )
        )
        logger.info(
            "%s: forget-train %s, membership AUC %s, retain-test %s, gates %s",
            c["name"],
            _f(after.forget_train_acc),
            _f(after.mia_auc),
            _f(after.retain_test_acc),
            "pass" if gates.passed else f"FAIL ({', '.join(gates.failed())})",
        )
    return before, baseline, results, round(time.perf_counter() - start, 3)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
