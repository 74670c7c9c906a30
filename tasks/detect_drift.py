"""Step: run every drift test, write the JSON report, publish it as Prefect artifacts."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from medunlearn.atomic import write_json
from medunlearn.data.drift import DriftReport, compare_batches, drift_markdown
from tasks.load_drift_inputs import DriftInputs


@task(name="detect-drift", cache_policy=NO_CACHE)
def detect_drift(
    inputs: DriftInputs,
    model_name: str,
    version: str | None,
    settings: dict,
) -> DriftReport:
    """Run every drift test of a batch against the reference data; report and publish it.

    The JSON report goes to ``settings["report"]``; the Prefect artifacts use stable keys
    (``drift-tests``, ``drift-summary``) so each watch replaces the last in the UI's latest
    view and keeps its history.

    Args:
        inputs: the reference and batch manifests, images and the production model.
        model_name: the registered model the batch is compared for.
        version: its production version (``None``: none recorded).
        settings: the params file's ``drift`` section: ``alpha`` (significance level),
            ``permutations``, ``seed``, ``report`` (JSON path).

    Returns:
        The report: every test and its findings (p-values below ``alpha``).
    """
    alpha = float(settings.get("alpha", 0.01))
    tests = compare_batches(
        inputs.reference,
        inputs.reference_images,
        inputs.batch,
        inputs.batch_images,
        inputs.model,
        alpha=alpha,
        permutations=int(settings.get("permutations", 500)),
        seed=int(settings.get("seed", 0)),
    )
    report = DriftReport(
        tests, inputs.batch_path, model_name, version, inputs.batch_sha256, inputs.notes
    )
    write_json(settings.get("report", "reports/drift.json"), {**report.to_dict(), "alpha": alpha})
    summary = drift_markdown(report, alpha)
    create_table_artifact(
        key="drift-tests",
        table=[t.to_dict() | {"detail": str(t.detail)} for t in tests],
        description=f"drift tests, batch {inputs.batch_path}",
    )
    create_markdown_artifact(key="drift-summary", markdown=summary, description="drift watch")
    get_run_logger().info(
        "drift watch: %d test(s), %d finding(s)", len(tests), len(report.findings)
    )
    return report
