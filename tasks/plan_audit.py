"""Step: resolve a revision audit's inputs from the registry (``medunlearn.revision.audit``)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.revision.audit import AuditPlan, plan_audit
from medunlearn.revision.registry import Registry


@task(name="plan-audit", cache_policy=NO_CACHE)
def plan_revision_audit(
    registry: Registry,
    name: str,
    version: str,
    params: dict[str, Any],
    reference_models: int,
    epochs: int | None = None,
) -> AuditPlan:
    """The audit's record, cohorts, audited model, model bank and reference seeds.

    Args:
        registry: the project's registry.
        name: the registered model.
        version: the version to audit.
        params: the whole params file.
        reference_models: K.
        epochs: the references' epochs override, or None.

    Returns:
        The plan (see ``medunlearn.revision.audit.plan_audit``).

    Raises:
        AuditRefused: an input that cannot give a meaningful audit.
    """
    plan = plan_audit(registry, name, version, params, reference_models, epochs)
    counts = plan.cohorts.masks.counts
    get_run_logger().info(
        "audit %s %s: %d forget-train rows of %d request(s), %d retain-train rows; "
        "reference seeds %s, %d epoch(s) (recipe: %s)",
        name,
        version,
        counts["forget_train"],
        len(plan.request_ids),
        counts["retain_train"],
        plan.seeds,
        plan.epochs,
        plan.recipe_source,
    )
    return plan
