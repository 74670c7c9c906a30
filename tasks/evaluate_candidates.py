"""Step: metrics of every candidate on the held-out cohorts, and its gate profile."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.gates import evaluate_gates
from medunlearn.metrics import UnlearnMetrics, unlearning_metrics
from medunlearn.revision import CandidateResult, make_candidate
from medunlearn.unlearn.request import Cohorts
from tasks.compose_candidates import load_run
from tasks.load_revision_inputs import RevisionInputs


@task(name="evaluate-candidates", cache_policy=NO_CACHE)
def evaluate_candidates(
    inputs: RevisionInputs,
    cohorts: Cohorts,
    candidates: list[dict[str, Any]],
    bounds: dict[str, dict[str, float]],
) -> tuple[UnlearnMetrics, list[CandidateResult], float]:
    """The deployed model's metrics (the gates' "before") and each candidate's, with gates,
    and the seconds spent computing them (the flow subtracts them to measure its overhead)."""
    logger = get_run_logger()
    start = time.perf_counter()
    reason = inputs.request.reason
    before = unlearning_metrics(inputs.deployed, cohorts)
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
            "%s: forget-test %.3f, retain-test %.3f, gates %s",
            c["name"],
            after.forget_test_acc if after.forget_test_acc is not None else float("nan"),
            after.retain_test_acc if after.retain_test_acc is not None else float("nan"),
            "pass" if gates.passed else "FAIL",
        )
    return before, results, round(time.perf_counter() - start, 3)
