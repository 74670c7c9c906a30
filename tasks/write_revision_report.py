"""Step: the run's reports: DVC metrics and plots files, a summary, a PNG, Prefect artifacts.

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


def _plot(rows: list[dict[str, Any]], deployed: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        style = dict(
            marker="*" if r["selected"] else "o",
            s=200 if r["selected"] else 50,
            color="tab:green" if r["passed"] else "tab:red",
        )
        ax.scatter([r["forget_train_acc"] or 0], [r["retain_test_acc"] or 0], **style)
        ax.annotate(
            r["candidate"],
            (r["forget_train_acc"] or 0, r["retain_test_acc"] or 0),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.scatter(
        [deployed["forget_train_acc"] or 0],
        [deployed["retain_test_acc"] or 0],
        marker="X",
        s=120,
        color="grey",
        label="deployed",
    )
    ax.set_xlabel("forget-train accuracy")
    ax.set_ylabel("retain-test accuracy")
    ax.set_title("candidates (green: gates pass, star: selected)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


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
) -> str:
    """Write ``metrics``, ``tradeoff``, ``summary`` and ``tradeoff_png`` (paths in ``cfg``).

    ``failed``: runs rejected before evaluation (``medunlearn.revision.candidates.failed_run``); the
    metrics file lists them under ``failed_runs`` and the summary names each with its reason.

    ``timings`` (from ``medunlearn.revision.candidates.run_timings``) go into the metrics file as they
    are: step, compute and overhead seconds up to the report step.
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
    write_json(
        cfg["metrics"],
        {
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
        },
    )
    write_text(cfg["tradeoff"], tradeoff_csv(candidates, name))
    write_text(cfg["summary"], summary)
    Path(cfg["tradeoff_png"]).parent.mkdir(parents=True, exist_ok=True)
    _plot(rows, deployed.to_dict(), cfg["tradeoff_png"])
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
