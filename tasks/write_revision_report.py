"""Step: the run's reports: DVC metrics, details, trade-off CSV and PNG, summary, artifacts.

The metrics file holds the headline figures only; the details file the rest; the trade-off
CSV feeds ``dvc plots``.

Written whether or not a candidate passed, so a failed run still explains itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from medunlearn.atomic import write_json, write_text, write_with
from medunlearn.data.request import Cohorts
from medunlearn.evidence.metrics import UnlearnMetrics
from medunlearn.revision.candidates import (
    CandidateResult,
    evidence_caveats,
    summary_markdown,
    tradeoff_csv,
    tradeoff_rows,
)
from medunlearn.revision.report import (
    candidates_figure,
    headline_metrics,
    metrics_details,
    revision_title,
)


def details_path(cfg: dict[str, Any]) -> str:
    """Where the details JSON goes.

    Args:
        cfg: the ``maintain.reports`` section.

    Returns:
        ``cfg["details"]``, else ``<metrics stem>_details.json`` next to the headline file
        (params written before the split).
    """
    if cfg.get("details"):
        return str(cfg["details"])
    metrics = Path(cfg["metrics"])
    return str(metrics.with_name(f"{metrics.stem}_details.json"))


def candidate_method(candidate: CandidateResult) -> str:
    """The name a candidate is coloured by in the plots.

    Args:
        candidate: a candidate of the sweep or the composition.

    Returns:
        Its method (a sweep run), or its composition's kind (``swap``, ``interpolate``).
    """
    return str(candidate.config.get("method") or candidate.kind)


def _plot(fig: Any, path: str) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))


@task(name="write-revision-report", cache_policy=NO_CACHE)
def write_revision_report(
    cohorts: Cohorts,
    deployed: UnlearnMetrics,
    candidates: list[CandidateResult],
    selected: CandidateResult | None,
    cfg: dict[str, Any],
    export: dict[str, Any] | None = None,
    timings: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    failed: list[dict[str, Any]] | None = None,
    model_name: str | None = None,
) -> str:
    """Write ``metrics``, ``details``, ``tradeoff``, ``summary`` and ``tradeoff_png``.

    The paths are in ``cfg``; ``details`` defaults to ``<metrics stem>_details.json``
    beside ``metrics``, which holds only the headline figures ``dvc metrics show`` prints
    (``medunlearn.revision.report.HEADLINE_LEAVES``); ``details`` the rest (gates, the full
    deployed and selected metrics, parity, counts, caveats, failed runs, timings).
    ``model_name`` and ``export["version"]`` (None: unregistered) name the plot's title.

    ``failed``: runs rejected before evaluation (``medunlearn.revision.candidates.failed_run``); the
    details file lists them under ``failed_runs`` and the summary names each with its reason.

    ``timings`` (from ``medunlearn.revision.candidates.run_timings``) go into the details file as
    they are: step, compute and overhead seconds up to the report step.

    Args:
        cohorts: the request's cohorts.
        deployed: the deployed model's metrics on them.
        candidates: every evaluated candidate.
        selected: the chosen one, or None (none passed).
        cfg: the ``maintain.reports`` section (paths).
        export: the ONNX export's result (``revision_id``, ``onnx``, ``parity``,
            ``version``), or None.
        timings: the flow's timings so far, or None.
        baseline: the deployed model's own gate result, or None.
        failed: runs rejected before evaluation, or None.
        model_name: the registered model's name (the plot's title), or None.

    Returns:
        The summary's markdown.
    """
    request = {**cohorts.request.__dict__, "hash": cohorts.request.hash}
    name = selected.name if selected else None
    summary = summary_markdown(
        request,
        cohorts.masks.counts,
        deployed.to_dict(),
        candidates,
        selected,
        export["onnx"] if export else None,
        export["parity"] if export else None,
        baseline,
        failed,
    )
    rows = tradeoff_rows(candidates, name)
    full = {
        "request": request["hash"],
        "reason": request["reason"],
        "passed": selected is not None,
        "selected": name,
        "revision_id": export["revision_id"] if export else None,
        "deployed": {
            k: deployed.to_dict()[k]
            for k in (
                "forget_train_acc",
                "forget_heldout_acc",
                "retain_test_acc",
                "retain_test_balanced_acc",
                "retain_heldout_acc",
                "retain_heldout_balanced_acc",
                "test_acc",
                "test_balanced_acc",
                "membership",
            )
        },
        "deployed_gates": baseline,
        "selected_metrics": selected.metrics if selected else None,
        "gates": selected.gates if selected else [c.gates for c in candidates],
        "parity": export["parity"] if export else None,
        "counts": cohorts.masks.counts,
        "caveats": evidence_caveats(selected.gates, baseline) if selected else [],
        "failed_runs": [{k: f[k] for k in ("name", "kind", "reason")} for f in (failed or [])],
        **(timings or {"step_seconds": {}}),
    }
    write_json(cfg["metrics"], headline_metrics(full))
    write_json(details_path(cfg), metrics_details(full))
    write_text(cfg["tradeoff"], tradeoff_csv(candidates, name))
    write_text(cfg["summary"], summary)
    Path(cfg["tradeoff_png"]).parent.mkdir(parents=True, exist_ok=True)
    methods = {c.name: candidate_method(c) for c in candidates}
    version = (export or {}).get("version") if selected else "(refused: no candidate passed)"
    title = revision_title(model_name, version, request["reason"], request["hash"])
    fig = candidates_figure(
        [{**r, "method": methods[r["candidate"]]} for r in rows], deployed.to_dict(), title
    )
    _plot(fig, cfg["tradeoff_png"])
    create_table_artifact(
        key="maintenance-candidates",
        table=rows,
        description=f"candidates for request {request['hash']}",
    )
    create_markdown_artifact(
        key="maintenance-summary",
        markdown=summary,
        description=f"revision summary for request {request['hash']}",
    )
    return summary
