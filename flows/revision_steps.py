"""Steps of the maintenance flow that compose several task calls.

The unlearning sweep (mapped, cached, a diverged run set aside), the selection that keeps
earlier requests forgotten, and the registration that leaves the ledger consistent.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from tqdm.auto import tqdm

from medunlearn.atomic import copy_files, remove_directory, staging_dir
from medunlearn.config import project_root
from medunlearn.revision.candidates import (
    CandidateResult,
    GatesFailed,
    failed_run,
    select_candidate,
)
from medunlearn.revision.plan import RevisionPlan, StepClock, ledger_hook, mark_refused
from medunlearn.revision.records import unlearned_record
from medunlearn.unlearn.methods import Diverged
from medunlearn.versioning import source_hash
from tasks.export_onnx import export_revision
from tasks.recheck_carried import recheck_carried
from tasks.register_revision import register_revision
from tasks.unlearn_candidate import run_is_intact, with_local_cache
from tasks.write_revision_report import write_revision_report

REPORT_KEYS = ("metrics", "details", "tradeoff", "summary", "tradeoff_png", "validation")


@dataclass
class Evaluated:
    """What the evaluation step found, as the report and the record need it.

    Attributes:
        cohorts: ``validate_data``'s cohorts.
        before: the deployed model's metrics.
        baseline: the deployed model under the same gates.
        results: every evaluated candidate.
        failed: runs rejected before evaluation.
        timings: the run's step timings so far.
    """

    cohorts: Any
    before: Any
    baseline: dict[str, Any]
    results: list[CandidateResult]
    failed: list[dict[str, Any]]
    timings: Callable[[], dict[str, Any]]


def unlearning_sweep(
    plan: RevisionPlan,
    inputs: Any,
    cohorts: Any,
    configs: list[dict[str, Any]],
    refresh: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One ``unlearn-<name>`` task per sweep entry, on the flow's task runner.

    Cached under ``maintain.work_dir`` by every input (data, model, request, settings,
    core code); a cached run whose checkpoint is missing or changed is recomputed.

    Args:
        plan: the revision's plan.
        inputs: ``load_revision_inputs``'s result.
        cohorts: ``validate_data``'s cohorts.
        configs: the sweep (``medunlearn.unlearn.sweep.revision_sweep``).
        refresh: recompute instead of reusing cached runs.

    Returns:
        The runs in sweep order, and the diverged ones (reported, never cached or composed).
    """
    logger = get_run_logger()
    core_hash = source_hash()

    def submit(config: dict[str, Any], again: bool):
        return (
            with_local_cache(plan.work_dir, again)
            .with_options(task_run_name=f"unlearn-{config['name']}")
            .submit(
                inputs,
                cohorts,
                config["name"],
                config["config"],
                plan.work_dir,
                inputs.deployed_sha256,
                inputs.data_fingerprint,
                inputs.request.hash,
                core_hash,
            )
        )

    futures = [submit(c, refresh) for c in configs]
    runs, failed = [], []  # in order: a failure raises after the earlier runs finished
    pending = list(zip(configs, futures, strict=True))
    for config, future in tqdm(pending, desc="unlearning sweep", disable=not sys.stderr.isatty()):
        try:
            run = future.result()
            if not run_is_intact(run):  # a cache record whose checkpoint was deleted or edited
                logger.warning("%s: cached checkpoint missing or changed; recomputing", run["name"])
                run = submit(config, True).result()
        except Diverged as exc:
            logger.warning("%s failed: %s; the revision goes on without it", config["name"], exc)
            failed.append(failed_run(config["name"], "sweep", config["config"], exc))
            continue
        runs.append(run)
    return runs, failed


def select_keeping(
    plan: RevisionPlan,
    results: list[CandidateResult],
    candidates: list[dict[str, Any]],
    inputs: Any,
    cohorts: Any,
) -> tuple[CandidateResult | None, dict[str, Any]]:
    """The best passing candidate that also keeps every earlier request forgotten.

    A candidate whose re-check of an earlier request fails is marked failed (``earlier
    request ID``) and the next best is tried.

    Args:
        plan: the revision's plan (its kept requests, gates and ``select_by``).
        results: the evaluated candidates.
        candidates: their runs (checkpoints).
        inputs: ``load_revision_inputs``'s result.
        cohorts: ``validate_data``'s cohorts.

    Returns:
        The selected candidate (None: none passed) and its re-checks per kept request.
    """
    selected = select_candidate(results, plan.select_by)
    rechecks: dict[str, Any] = {}
    while selected is not None and plan.kept:
        rechecks = recheck_carried(selected, candidates, inputs, cohorts, plan.kept, plan.bounds)
        lost = [i for i, g in rechecks.items() if not g["passed"]]
        if not lost:
            break
        selected.gates["passed"] = False
        selected.gates["failed"] = [
            *selected.gates["failed"],
            *(f"earlier request {i}" for i in lost),
        ]
        selected = select_candidate(results, plan.select_by)
    return selected, rechecks


def register_staged(
    plan: RevisionPlan, folder: Path, record: dict[str, Any], version: str | None
) -> dict[str, Any]:
    """Register the staged revision ``folder`` as ``version``.

    With the registry off, the folder moves to ``maintain.candidate_dir`` instead. The
    ledger entry becomes ``applied in VERSION`` in the same commit, and goes back to
    pending if registration fails (the exception is raised again).

    Args:
        plan: the revision's plan.
        folder: the staged files (moved, not copied).
        record: the revision record.
        version: the planned version, or None.

    Returns:
        The registered record (``version``, ``files``, ``pushed``, ...).
    """
    ledger, ledger_id = plan.ledger, plan.ledger_id
    try:
        return register_revision(
            str(folder),
            record,
            plan.registry,
            plan.model_name,
            version,
            plan.stages,
            plan.candidate_dir,
            ledger_hook(plan, get_run_logger()),
            None if ledger is None or ledger_id is None else (ledger.path, ledger_id),
        )
    except BaseException:
        if ledger is not None and ledger_id is not None:  # not applied after all:
            ledger.set_status([ledger_id], "pending")  # the settlement says why
        raise


def refuse(plan: RevisionPlan, found: Evaluated, reason: str) -> None:
    """No candidate passed: reject the entry, write the report, export nothing.

    The ledger entry is rejected (committed), the report written, an unregistered
    candidate of an earlier request removed.

    Args:
        plan: the revision's plan.
        found: the evaluation's findings.
        reason: the request's reason (named in the refusal).

    Raises:
        GatesFailed: always, naming the report.
    """
    failed, reports = found.failed, plan.reports
    names = ", ".join(f["name"] for f in failed)
    if plan.ledger is not None and plan.ledger_id is not None:
        why = "no candidate passed the gates" + (f" ({names} failed)" if failed else "")
        mark_refused(plan.params_path, plan.ledger, plan.ledger_id, why, get_run_logger())
    write_revision_report(
        found.cohorts,
        found.before,
        found.results,
        None,
        reports,
        timings=found.timings(),
        baseline=found.baseline,
        failed=failed,
        model_name=plan.model_name,
    )
    if plan.registry is None:  # an unregistered candidate of an earlier request must go
        remove_directory(plan.candidate_dir)
    diverged = f" ({len(failed)} run(s) failed: {names})" if failed else ""
    raise GatesFailed(
        f"no candidate of {len(found.results)} passed the {reason} gates{diverged}; "
        f"report in {reports['summary']}, nothing exported"
    )


def publish(
    plan: RevisionPlan,
    inputs: Any,
    data: Any,
    found: Evaluated,
    selected: CandidateResult,
    candidates: list[dict[str, Any]],
    rechecks: dict[str, Any],
    clock: StepClock,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Export the selected candidate, write the report, build the record and register it.

    The export is to ONNX; the staged folder moves into place as one, or is removed.

    Args:
        plan: the revision's plan.
        inputs: ``load_revision_inputs``'s result.
        data: the validated dataset splits.
        found: the evaluation's findings.
        selected: the selected candidate.
        candidates: every candidate's run (checkpoints).
        rechecks: the kept requests' re-checks on ``selected``.
        clock: the run's step clock (``export``, ``report``, ``register`` laps).

    Returns:
        The registered record, the export (``revision_id``, ``onnx``, ``parity``, ...) and
        the summary Markdown.
    """
    maintain, reports = plan.maintain, plan.reports
    run = next(c for c in candidates if c["name"] == selected.name)
    folder = staging_dir(plan.staging_home, ".revision-")
    try:
        version = plan.next_version()
        export = export_revision(
            inputs,
            data,
            selected,
            run,
            str(folder),
            float(maintain.get("parity_atol", 1e-4)),
            str(Path(plan.work_dir) / "onnx-graphs"),
            version,
        )
        final_dir = plan.final_dir(version)  # the report names where the files will be
        export = {
            **export,
            "version": version,
            "checkpoint": str(final_dir / "model.pt"),
            "onnx": str(final_dir / "model.onnx"),
        }
        clock.lap("export")
        summary = write_revision_report(
            found.cohorts,
            found.before,
            found.results,
            selected,
            reports,
            export,
            timings=found.timings(),
            baseline=found.baseline,
            failed=found.failed,
            model_name=plan.model_name,
        )
        copy_files([reports.get(k) for k in REPORT_KEYS], folder / "reports")
        clock.lap("report")
        base = unlearned_record(
            inputs,
            found.cohorts,
            selected,
            export,
            plan.parent,
            plan.params,
            source_hash(),
            project_root(plan.params_path),
        )
        record = plan.complete_record(base, selected, found.baseline, found.failed, rechecks)
        for caveat in record["caveats"]:
            get_run_logger().warning("evidence caveat: %s", caveat)
        revision = register_staged(plan, folder, record, version)
        clock.lap("register")
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # moved into place on success
    return revision, export, summary


def outcome(
    revision: dict[str, Any],
    export: dict[str, Any],
    summary: str,
    selected: CandidateResult,
    results: list[CandidateResult],
    baseline: dict[str, Any],
    timings: dict[str, Any],
) -> dict[str, Any]:
    """The maintenance flow's result, logged in one line.

    Args:
        revision: the registered record (``version``, ``files``).
        export: the export (``revision_id``, ``onnx``, ``parity``, ...).
        summary: the summary Markdown.
        selected: the selected candidate.
        results: every evaluated candidate.
        baseline: the untouched deployed model under the same gates.
        timings: the run's step, compute and overhead seconds.

    Returns:
        ``revision_id``, ``version``, ``files``, ``selected``, ``summary``, ``export``,
        ``candidates``, ``baseline`` and ``timings``.
    """
    get_run_logger().info(
        "revision %s (%s) selected %s; step seconds %s; overhead %.1f s",
        revision.get("version") or "unregistered",
        export["revision_id"],
        selected.name,
        timings["step_seconds"],
        timings["overhead_seconds"],
    )
    return {
        "revision_id": export["revision_id"],
        "version": revision.get("version"),
        "files": revision.get("files"),
        "selected": selected.name,
        "summary": summary,
        "export": export,
        "candidates": [c.to_dict() for c in results],
        "baseline": baseline,  # the untouched deployed model under the same gates
        "timings": timings,
    }
