"""Step: compute a revision audit's statistics and write them next to the record.

With the regenerated card (``medunlearn.revision.audit``).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from medunlearn.revision.audit import AuditPlan, Reference, audit_result, write_audit
from medunlearn.revision.registry import Registry


@task(name="write-audit", cache_policy=NO_CACHE)
def write_revision_audit(
    registry: Registry, plan: AuditPlan, references: list[Reference], seconds: float
) -> dict[str, Any]:
    """Offline LiRA of the audited model against ``references``; write and publish it.

    ``audit.json`` and the card are written (and committed); the verdict is published as a
    Prefect markdown artifact.

    Args:
        registry: the project's registry.
        plan: the audit's plan.
        references: its reference models.
        seconds: wall seconds spent so far.

    Returns:
        The audit's content with ``written`` (path, committed, why_not).
    """
    result = audit_result(plan, references, seconds)
    written = write_audit(registry, result)
    logger = get_run_logger()
    logger.info("audit %s %s: %s", plan.model, plan.version, result["verdict"])
    if not written["committed"]:
        logger.warning("%s not committed: %s", written["path"], written["why_not"])
    create_markdown_artifact(
        key="revision-audit",
        markdown=f"# Audit: {plan.model} {plan.version}\n\n**{result['status']}**: "
        f"{result['verdict']}\n",
        description="per-example membership audit (offline LiRA)",
    )
    return {**result, "written": written}
