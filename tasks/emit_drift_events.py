"""Step: one ``medunlearn.data.drift.detected`` Prefect event per drift finding."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from medunlearn.data.drift import EVENT, DriftReport


@task(name="emit-drift-events", cache_policy=NO_CACHE)
def emit_drift_events(report: DriftReport) -> list[str]:
    """Emit one event per finding (payload schema: README, "Drift").

    The resource is the model, labelled with the finding's attribute and kind, so an
    automation can match one model's drift of one kind (``maintenance/on-drift``: vanished
    devices).

    Args:
        report: the drift report (its findings' payloads).

    Returns:
        The emitted events' ids (none for an event Prefect did not emit).
    """
    ids = []
    for payload in report.payloads():
        event = emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": f"medunlearn.model.{report.model}",
                "prefect.resource.name": str(report.model),
                "medunlearn.attribute": str(payload["attribute"]),
                "medunlearn.kind": str(payload["kind"]),
            },
            payload=payload,
        )
        if event is not None:
            ids.append(str(event.id))
        get_run_logger().warning(
            "drift: %s %s %s (p = %.3g)",
            payload["attribute"],
            payload["kind"],
            payload["value"] or "",
            payload["p_value"],
        )
    return ids
