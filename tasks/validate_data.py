"""Step: Great Expectations suites on the manifest and the cohorts, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from medunlearn.atomic import write_json
from medunlearn.data.dataset import DatasetSplits, open_splits
from medunlearn.data.expectations import (
    ValidationReport,
    cached_manifest_report,
    manifest_report_key,
    validate_cohorts,
    validate_manifest,
)
from medunlearn.data.request import (
    DEFAULT_MAX_FORGET_FRACTION,
    Cohorts,
    build_cohorts,
    cohort_masks,
)
from medunlearn.versioning import source_hash
from tasks.load_revision_inputs import RevisionInputs


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(
    inputs: RevisionInputs,
    cfg: dict[str, Any],
    report_path: str,
    max_in_memory_mb: float = 1024,
    cache_dir: str = ".cache/maintain/validation",
    refresh: bool = False,
) -> tuple[DatasetSplits, Cohorts]:
    """Run the manifest and cohort suites and write the report; only then open the images.

    A passed manifest suite is reused from ``cache_dir`` when the data (content hash),
    classes, input shape and code are unchanged, unless ``refresh``. The report is written
    (and published as a Prefect artifact) whether or not the suites pass.

    Args:
        inputs: the revision's inputs (manifest, request, data fingerprint).
        cfg: the params file's ``validation`` section: ``max_forget_fraction`` (share of
            the training rows, in [0, 1]) and ``override_fraction``.
        report_path: where the validation report (JSON) is written.
        max_in_memory_mb: in-memory budget per split (MiB of float32 pixels).
        cache_dir: where passed manifest suites are kept.
        refresh: run the manifest suite even when a passed result is kept.

    Returns:
        The opened splits and the request's cohorts.

    Raises:
        ValidationFailed: an expectation failed (raised by the report's
            ``raise_on_failure``).
    """
    logger = get_run_logger()
    info = inputs.info
    key = manifest_report_key(inputs.data_fingerprint, info.class_names, info.spec, source_hash())
    manifest_report, reused = cached_manifest_report(
        Path(cache_dir),
        key,
        lambda: validate_manifest(inputs.manifest, inputs.dataset_dir, info.class_names, info.spec),
        refresh=refresh,
    )
    if reused:
        logger.info("manifest suite: reusing the passed result for this data (key %s)", key[:12])
    if not manifest_report.success:  # cohorts of a broken manifest mean nothing
        _finish(manifest_report, inputs, report_path)
    masks = cohort_masks(inputs.manifest, inputs.request)
    cohort_report = validate_cohorts(
        inputs.manifest,
        masks,
        inputs.request,
        info.class_names,
        float(cfg.get("max_forget_fraction", DEFAULT_MAX_FORGET_FRACTION)),
        bool(cfg.get("override_fraction", False)),
    )
    report = _finish(
        ValidationReport(manifest_report.outcomes + cohort_report.outcomes), inputs, report_path
    )
    logger.info("validation: %s (%s)", report.summary(), Path(report_path))
    data = open_splits(inputs.dataset_dir, max_in_memory_mb)
    cohorts = build_cohorts(
        data.manifest, data.train, data.val, data.test, info.class_names, inputs.request
    )
    return data, cohorts


def _finish(report: ValidationReport, inputs: RevisionInputs, report_path: str) -> ValidationReport:
    """Write the report (always) and publish it; raise if any expectation failed."""
    write_json(report_path, {"request": inputs.request.hash, **report.to_dict()})
    create_markdown_artifact(
        key="validation-report",
        markdown=f"## Data validation\n\n```\n{report.summary()}\n```\n",
        description=f"GX suites for request {inputs.request.hash}",
    )
    if not report.success:  # one line here: the refusal itself carries the block, once
        first = report.summary().splitlines()[0].rstrip(":")
        get_run_logger().error("validation failed: %s (report %s)", first, report_path)
    return report.raise_on_failure()
