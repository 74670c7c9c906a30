"""Flow ``maintenance``: a forget request in, a validated, gated, exported model revision out.

    python -m flows.maintenance [--request requests/retire_digit_3.yaml] [--params params.yaml]
    medunlearn revise --request requests/deprecate_device.yaml

Steps (one task module each): load-revision-inputs -> validate-data (Great Expectations)
-> unlearn-candidate (mapped over ``maintain.sweep``, cached) -> compose-candidates ->
evaluate-candidates (gates) -> export-onnx -> write-revision-report. Reads the ``maintain``,
``validation``, ``unlearn`` and ``gates`` sections. If no candidate passes the gates the flow
raises after writing its report, and nothing is exported; the deployed model is only read.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from medunlearn.atomic import copy_files, remove_directory, staging_dir
from medunlearn.config import load_params, load_section, project_root
from medunlearn.data.drift import request_from_finding
from medunlearn.data.expectations import ValidationFailed
from medunlearn.data.manifest import ManifestError, read_manifest_csv
from medunlearn.data.request import (
    ForgetRequest,
    RequestError,
    check_request,
)
from medunlearn.errors import Refusal
from medunlearn.evidence.gates import GateConfigError
from medunlearn.models.checkpoint import CheckpointError
from medunlearn.revision.candidates import (
    GatesFailed,
    evidence_caveats,
    failed_run,
    request_cohorts,
    run_timings,
    select_candidate,
)
from medunlearn.revision.ledger import (
    AlreadyApplied,
    Ledger,
    LedgerError,
    active_ledger,
    record_entry,
    split_carried,
    track_salt,
    use_project_salt,
)
from medunlearn.revision.records import unlearned_record
from medunlearn.revision.registry import RegistryBusy, active_registry
from medunlearn.unlearn.methods import Diverged, MethodConfigError
from medunlearn.unlearn.sweep import SweepError, check_sweeps, revision_sweep
from medunlearn.versioning import source_hash
from tasks.compose_candidates import compose_candidates
from tasks.evaluate_candidates import evaluate_candidates
from tasks.export_onnx import export_revision
from tasks.load_revision_inputs import load_revision_inputs
from tasks.recheck_carried import recheck_carried
from tasks.register_revision import register_revision
from tasks.unlearn_candidate import run_is_intact, with_local_cache
from tasks.validate_data import validate_data
from tasks.write_revision_report import write_revision_report

REPORT_KEYS = ("metrics", "tradeoff", "summary", "tradeoff_png", "validation")


def task_runner(maintain: dict[str, Any]):
    """The sweep's task runner: threads, or Dask (``dask_address``, else a local cluster of
    ``dask_workers`` processes, one thread each) through prefect-dask."""
    kind = maintain.get("task_runner", "threads")
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=int(maintain.get("max_workers", 2)))
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError(
                "maintain.task_runner 'dask' needs the prefect-dask package"
            ) from exc
        address = maintain.get("dask_address")
        if address:  # an existing scheduler (e.g. GPU workers, README "Scale")
            return DaskTaskRunner(address=str(address))
        return DaskTaskRunner(  # a temporary local cluster of worker processes
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": int(maintain.get("dask_workers", 2)),
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    raise ValueError(f"maintain.task_runner must be threads or dask, not '{kind}'")


@flow(name="maintenance", log_prints=True)
def maintenance_flow(
    params_path: str = "params.yaml",
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
    ledger_id: str | None = None,
    pending: bool = False,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One revision (``request`` or ``ledger_id``), every pending ledger request
    (``pending``: the ``maintenance/scheduled`` deployment), or what a drift finding becomes
    under ``drift.on_device_drift`` (``drift``: a ``medunlearn.data.drift.detected`` payload,
    the ``maintenance/on-drift`` deployment). Pending and drift runs that find nothing to do
    succeed and touch no file; a refused request fails the run after the others ran."""
    if drift is not None:
        return revise_on_drift(params_path, drift, refresh_cache)
    if pending:
        return revise_pending(params_path, refresh_cache)
    return revise_and_settle(params_path, request, refresh_cache, ledger_id)


def revise_pending(params_path: str, refresh_cache: bool = False) -> dict[str, Any]:
    """Every pending ledger request in the order received, one revision each."""
    logger = get_run_logger()
    params = load_params(params_path)
    root = project_root(params_path)
    registry, why_off = active_registry(params, root)
    ledger = active_ledger(params, root) if registry else None
    if ledger is None:
        why = why_off or "ledger.enabled is false"
        logger.info("nothing to do: no forget ledger (%s)", why)
        return {"status": "nothing to do", "why": f"no forget ledger ({why})", "revisions": []}
    jobs = ledger.pending()
    if not jobs:
        logger.info("nothing to do: no pending request in %s", ledger.path)
        return {"status": "nothing to do", "why": "no pending request", "revisions": []}
    revisions, refused, crashed = [], [], []
    for entry in jobs:  # one bad (or crashing) request never blocks the ones after it
        try:
            revisions.append(revise_and_settle(params_path, None, refresh_cache, entry["id"]))
        except AlreadyApplied as exc:
            logger.info("nothing to do: %s", exc)
        except (*SETTINGS_ERRORS, CheckpointError, RegistryBusy):  # every request would fail
            raise
        except Refusal as exc:  # settled in the ledger as rejected; the queue goes on
            logger.error("request %s refused: %s: %s", entry["id"], type(exc).__name__, exc)
            refused.append(entry["id"])
        except Exception as exc:  # a crash: settled as failed, logged with its traceback
            logger.exception("request %s failed", entry["id"])
            crashed.append((entry["id"], exc))
    if crashed:
        ids = [i for i, _ in crashed]
        raise RuntimeError(
            f"{len(crashed)} of {len(jobs)} pending request(s) crashed: {ids}"
            + (f"; {len(refused)} refused: {refused}" if refused else "")
        ) from crashed[0][1]
    if refused:
        raise GatesFailed(f"{len(refused)} of {len(jobs)} pending request(s) refused: {refused}")
    return {"status": "revised", "revisions": revisions}


BAD_INPUT = (ManifestError, ValidationFailed, LedgerError, RequestError)
SETTINGS_ERRORS = (SweepError, MethodConfigError, GateConfigError)


STEPS = ("load", "validate", "unlearn", "compose", "evaluate", "export", "report", "register")


def revise_and_settle(
    params_path: str,
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
    ledger_id: str | None = None,
) -> dict[str, Any]:
    """:func:`revise_request`, after which a ledger request the run tried is never left
    ``pending``: refused by its gates or its data, it ends ``rejected: ...``; crashed, it
    ends ``failed: STEP (ERROR)``; either is committed at once (:func:`settle`), and a
    scheduled run no longer retries it (submitting it again does). A settings error is
    the configuration's, not the request's: the request stays pending for the fixed run.
    A wrong deployed checkpoint is the setup's too. The status names the error's kind and
    the step only: messages can name rows, the ledger is in git. A busy registry (another
    run holds it, or took the planned version) is nobody's fault: the request stays pending
    and the next run tries it again."""
    clock = Timings()
    try:
        return revise_request(params_path, request, refresh_cache, ledger_id, clock)
    except AlreadyApplied:
        raise
    except (*SETTINGS_ERRORS, CheckpointError, RegistryBusy):  # not the request's fault
        raise
    except Exception as exc:
        if isinstance(exc, GatesFailed):
            status = "rejected: no candidate passed the gates (see the revision report)"
        elif isinstance(exc, BAD_INPUT):
            status = f"rejected: {type(exc).__name__} (see the run's log)"
        else:
            status = f"failed: {clock.running()} ({type(exc).__name__})"
        try:
            settle(params_path, request, ledger_id, status)
        except Exception as problem:  # noqa: BLE001 - never hide the run's own error
            get_run_logger().warning("ledger status %r not recorded: %s", status, problem)
        raise


def settle(
    params_path: str, request: str | dict[str, Any] | None, ledger_id: str | None, status: str
) -> None:
    """Give a tried request's ledger entry ``status`` if it is still pending (the flow may
    have settled it already) and commit the ledger. A request that never entered the
    ledger (unreadable, or refused before it was added) has nothing to settle."""
    params = load_params(params_path)
    root = project_root(params_path)
    registry, _ = active_registry(params, root)
    ledger = active_ledger(params, root) if registry else None
    if ledger is None:
        return
    if ledger_id is None:
        wanted = request or (params.get("maintain") or {}).get("request")
        try:
            plain = (
                ForgetRequest.from_dict(wanted, "request parameter")
                if isinstance(wanted, dict)
                else ForgetRequest.load(wanted)
            )
            entry = ledger.find(plain)
        except Exception:  # noqa: BLE001 - unreadable: it never entered the ledger
            return
    else:
        entry = next((e for e in ledger.entries() if e["id"] == ledger_id), None)
    if entry is None or entry["status"] != "pending":
        return
    reject(params_path, ledger, entry["id"], status)


def reject(params_path: str, ledger: Ledger, ledger_id: str, why: str) -> None:
    """Mark a request ``rejected: why`` (or give it ``why`` when that is a whole status,
    ``failed: ...`` or ``rejected: ...``) and commit the ledger file alone (no revision
    commit will carry it, and an unattended run must not leave the ledger uncommitted).
    A failed commit is logged; the status stays."""
    status = why if why.startswith(("failed: ", "rejected: ")) else f"rejected: {why}"
    ledger.set_status([ledger_id], status)
    registry, _ = active_registry(load_params(params_path), project_root(params_path))
    if registry is None:
        return
    try:
        kind = status.split(":", 1)[0]
        registry.commit_files([ledger.path], f"ledger: request {ledger_id} {kind}")
    except Exception as exc:  # noqa: BLE001 - the rejection stands; the commit can follow
        get_run_logger().warning("ledger rejection of %s not committed: %s", ledger_id, exc)


def revise_on_drift(
    params_path: str, payload: dict[str, Any], refresh_cache: bool = False
) -> dict[str, Any]:
    """Apply the ``drift`` section's rule to one finding: a forget request revised now
    (registered as candidate, staging under ``promotion.auto_staging``; never production),
    or a recorded notification."""
    logger = get_run_logger()
    settings = dict(load_params(params_path).get("drift") or {})
    request, why = request_from_finding(payload, settings)
    if request is None:
        logger.warning("drift finding recorded, no revision: %s", why)
        create_markdown_artifact(
            key="drift-decision",
            markdown=f"# Drift finding: no revision\n\n{why}\n\n```json\n"
            f"{json.dumps(payload, indent=2, default=str)}\n```\n",
            description="what a drift finding became",
        )
        return {"status": "notified", "why": why, "finding": payload}
    logger.info("drift finding becomes a request: %s", request["note"])
    params = load_params(params_path)
    root = project_root(params_path)
    registry, _ = active_registry(params, root)
    ledger = active_ledger(params, root) if registry else None
    if ledger is None:
        return {"status": "revised", **revise_request(params_path, request, refresh_cache)}
    forget = ForgetRequest.from_dict(request, "drift finding")
    known = ledger.find(forget)
    if known is not None and known["status"] != "pending":  # never resubmitted by a drift
        why = f"request {known['id']} for this finding is already {known['status']}"
        logger.info("nothing to do: %s", why)
        return {"status": "nothing to do", "why": why, "finding": payload}
    entry = ledger.add(forget)
    return {
        "status": "revised",
        **revise_and_settle(params_path, None, refresh_cache, entry["id"]),
    }


def revise_request(
    params_path: str = "params.yaml",
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
    ledger_id: str | None = None,
    clock: Timings | None = None,
) -> dict[str, Any]:
    """Run one revision; ``request`` (a file or a mapping) overrides ``maintain.request``.

    With the registry and the forget ledger on, the request is (added to and) taken from the
    ledger (``ledger_id``: a pending entry) and every applied request is kept: re-checked by
    its own gates on the selected candidate, its rows never retained. Only the requests the
    production parent did not apply (its record's ``requests``) are unlearned again with the
    new one; those it applied are inherited (their rows in no cohort, no sweep runs of
    their own). The entry ends ``applied in VERSION`` or ``rejected: ...``.
    """
    logger = get_run_logger()
    started_at = time.time()
    clock = clock or Timings()  # the caller's, so it can say which step a crash was in
    maintain = load_section("maintain", params_path)
    validation = load_section("validation", params_path)
    unlearn = load_section("unlearn", params_path)
    bounds = load_section("gates", params_path)
    params = load_params(params_path)
    registry, registry_off = active_registry(params, project_root(params_path))
    if registry is not None and (registry.interrupted() or registry.orphans()):  # killed runs
        logger.warning("registry repaired first: %s", registry.repair())
    model_name = str((params.get("registry") or {}).get("model", "classifier"))
    promotion = dict(params.get("promotion") or {})
    reports = maintain["reports"]
    work_dir = str(Path(maintain.get("work_dir", ".cache/maintain")))
    Path(work_dir).mkdir(parents=True, exist_ok=True)

    check_sweeps(maintain, unlearn, bounds)  # a bad entry or bound fails before any data
    deployed_path, parent, parent_record = maintain["deployed"], None, None
    if registry is None:
        logger.info(
            "registry off (%s): the revision goes to %s", registry_off, candidate_dir(maintain)
        )
    else:
        parent = registry.current(model_name, "production")
        if parent is None:
            logger.warning(
                "registry has no production version of '%s': using maintain.deployed %s",
                model_name,
                deployed_path,
            )
        else:
            deployed_path = str(registry.production_checkpoint(model_name, parent))
            parent_record = registry.record(model_name, parent)
    ledger = active_ledger(params, project_root(params_path)) if registry else None
    # identifiers in reports, hashes and the ledger are salted with the project's secret
    use_project_salt(params, project_root(params_path), create=ledger is not None)
    wanted: Any = request or maintain["request"]
    # every earlier request the revision keeps (re-checked, never retained), and the part of
    # it the starting model has not forgotten yet (unlearned again with the new request)
    kept: list[tuple[str, Any]] = []
    carried: list[tuple[str, Any]] = []
    entry = None
    if ledger is not None:
        manifest = read_manifest_csv(Path(maintain["dataset"]) / "manifest.csv")
        if ledger_id is None:
            plain = (
                ForgetRequest.from_dict(wanted, "request parameter")
                if isinstance(wanted, dict)
                else ForgetRequest.load(wanted)
            )
            try:  # a request the data cannot serve never enters the ledger
                check_request(manifest, plain, validation)
            except RequestError as exc:
                where = "request parameter" if isinstance(wanted, dict) else str(wanted)
                raise RequestError(f"{where}: {exc}") from exc
            ledger_id = ledger.add(plain)["id"]
        entry = next((e for e in ledger.entries() if e["id"] == ledger_id), None)
        if entry is None:
            raise LedgerError(f"{ledger.path}: no request {ledger_id}")
        if entry["status"].startswith("applied in "):
            raise AlreadyApplied(f"request {ledger_id} was already {entry['status']}")
        if entry["status"] != "pending":
            raise LedgerError(f"request {ledger_id} is not pending: {entry['status']}")
        kept = [(i, r) for i, r in ledger.carried(manifest) if i != ledger_id]
        inherited, carried = split_carried(kept, parent_record)
        wanted = replace(
            ledger.request(entry, manifest),
            carried=tuple(r for _, r in carried),
            inherited=tuple(r for _, r in inherited),
        )
        logger.info(
            "ledger request %s (%s); keeping %d applied request(s): %d forgotten by %s, "
            "%d forgotten again",
            ledger_id,
            entry["reason"],
            len(kept),
            len(inherited),
            parent or deployed_path,
            len(carried),
        )
    inputs = load_revision_inputs(maintain["dataset"], deployed_path, wanted)
    if ledger is None:  # a request file that lists them (``medunlearn reproduce``)
        carried = [(r.hash, r) for r in inputs.request.carried]
        kept = [*((r.hash, r) for r in inputs.request.inherited), *carried]
    clock.lap("load")
    data, cohorts = validate_data(
        inputs,
        validation,
        reports["validation"],
        float(maintain.get("max_in_memory_mb", 1024)),
        str(Path(work_dir) / "validation"),
        refresh=refresh_cache,
    )
    clock.lap("validate")
    # the new request's reason, plus those of earlier requests forgotten again here (an
    # inherited request is only re-checked: the parent's weights already forgot it)
    reasons = [inputs.request.reason, *(r.reason for _, r in carried)]
    configs = revision_sweep(maintain, unlearn, reasons)
    core_hash = source_hash()

    def submit(config: dict[str, Any], refresh: bool):
        return with_local_cache(work_dir, refresh).submit(
            inputs,
            cohorts,
            config["name"],
            config["config"],
            work_dir,
            inputs.deployed_sha256,
            inputs.data_fingerprint,
            inputs.request.hash,
            core_hash,
        )

    futures = [submit(c, refresh_cache) for c in configs]
    runs = []  # in order: a failure raises after the earlier runs finished (and were cached)
    failed: list[dict[str, Any]] = []  # diverged runs: reported, never cached or composed
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
    clock.lap("unlearn")
    composed = compose_candidates(runs, cohorts, maintain.get("compose", {}), work_dir)
    failed += [c for c in composed if c.get("failed")]
    composed = [c for c in composed if not c.get("failed")]
    clock.lap("compose")
    candidates = [{**r, "kind": "sweep"} for r in runs] + composed
    # the new request's gates see its own rows (earlier ones are re-checked separately)
    evidence = request_cohorts(cohorts, inputs.request) if inputs.request.carried else cohorts
    before, baseline, results, evaluate_seconds = evaluate_candidates(
        inputs, evidence, candidates, bounds
    )
    clock.lap("evaluate")

    def timings() -> dict[str, Any]:
        return run_timings(clock.laps, runs, composed, evaluate_seconds, started_at)

    selected = select_candidate(results, maintain.get("select_by", "retain_test_acc"))
    rechecks: dict[str, Any] = {}
    while selected is not None and kept:  # earlier requests must stay forgotten
        rechecks = recheck_carried(selected, candidates, inputs, cohorts, kept, bounds)
        lost = [i for i, g in rechecks.items() if not g["passed"]]
        if not lost:
            break
        selected.gates["passed"] = False
        selected.gates["failed"] = [
            *selected.gates["failed"],
            *(f"earlier request {i}" for i in lost),
        ]
        selected = select_candidate(results, maintain.get("select_by", "retain_test_acc"))
    if selected is None:
        if ledger is not None and ledger_id is not None:
            reject(
                params_path,
                ledger,
                ledger_id,
                "no candidate passed the gates"
                + (f" ({', '.join(f['name'] for f in failed)} failed)" if failed else ""),
            )
        write_revision_report(
            cohorts,
            before,
            results,
            None,
            reports,
            timings=timings(),
            baseline=baseline,
            failed=failed,
        )
        if registry is None:  # an unregistered candidate of an earlier request must not stay
            remove_directory(candidate_dir(maintain))
        diverged = f" ({len(failed)} run(s) failed: {', '.join(f['name'] for f in failed)})"
        raise GatesFailed(
            f"no candidate of {len(results)} passed the {inputs.request.reason} gates"
            f"{diverged if failed else ''}; report in {reports['summary']}, nothing exported"
        )
    run = next(c for c in candidates if c["name"] == selected.name)
    home = (
        (registry.root / registry.models_dir) if registry else Path(candidate_dir(maintain)).parent
    )
    folder = staging_dir(home, ".revision-")
    try:
        planned = registry.next_version(model_name, "minor", parent) if registry else None
        export = export_revision(
            inputs,
            data,
            selected,
            run,
            str(folder),
            float(maintain.get("parity_atol", 1e-4)),
            str(Path(work_dir) / "onnx-graphs"),
            planned,
        )
        final_dir = (
            registry.files_dir(model_name, planned).relative_to(registry.root)
            if registry and planned
            else Path(candidate_dir(maintain))
        )
        export = {  # the report names where the files will be, not the staging folder
            **export,
            "version": planned,
            "checkpoint": str(final_dir / "model.pt"),
            "onnx": str(final_dir / "model.onnx"),
        }
        clock.lap("export")
        summary = write_revision_report(
            cohorts,
            before,
            results,
            selected,
            reports,
            export,
            timings=timings(),
            baseline=baseline,
            failed=failed,
        )
        copy_files([reports.get(k) for k in REPORT_KEYS], folder / "reports")
        clock.lap("report")
        record = unlearned_record(
            inputs, cohorts, selected, export, parent, params, core_hash, project_root(params_path)
        )
        record["failed_runs"] = [{k: f[k] for k in ("name", "kind", "reason")} for f in failed]
        record["deployed_gates_passed"] = bool(baseline.get("passed"))
        record["caveats"] = evidence_caveats(selected.gates, baseline)
        for caveat in record["caveats"]:
            logger.warning("evidence caveat: %s", caveat)
        if ledger is not None and entry is not None:
            applied = {e["id"]: e for e in ledger.applied()}
            record["requests"] = [record_entry(applied[i]) for i, _ in kept] + [record_entry(entry)]
            # the requests this version applies through its parent's weights (not unlearned
            # again here); ``medunlearn reproduce`` rebuilds the run from it
            again = {i for i, _ in carried}
            record["inherited"] = [i for i, _ in kept if i not in again]
            record["rechecks"] = rechecks
        stages = ("candidate", "staging") if promotion.get("auto_staging") else ("candidate",)
        try:
            revision = register_revision(
                str(folder),
                record,
                registry,
                model_name,
                planned,
                stages,
                candidate_dir(maintain),
                ledger_update(ledger, ledger_id),
                None if ledger is None or ledger_id is None else (ledger.path, ledger_id),
            )
        except BaseException:
            if ledger is not None and ledger_id is not None:  # not applied after all:
                ledger.set_status([ledger_id], "pending")  # revise_and_settle says why
            raise
        clock.lap("register")
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # moved into place on success
    final = timings()
    logger.info(
        "revision %s (%s) selected %s; step seconds %s; overhead %.1f s",
        revision.get("version") or "unregistered",
        export["revision_id"],
        selected.name,
        final["step_seconds"],
        final["overhead_seconds"],
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
        "timings": final,
    }


def ledger_update(ledger: Ledger | None, ledger_id: str | None):
    """The registry's pre-commit hook: mark the request applied in the new version, and
    return the ledger's files so they go into the revision's commit."""
    if ledger is None or ledger_id is None:
        return None

    def update(version: str) -> list[Path]:
        ledger.set_status([ledger_id], f"applied in {version}")
        salt_dvc = Path(f"{ledger.salt_path}.dvc")
        if not salt_dvc.exists():
            why = track_salt(ledger)
            if why:
                get_run_logger().warning("ledger salt not tracked by DVC: %s", why)
        return [ledger.path, ledger.path.parent / ".gitignore", salt_dvc]

    return update


def candidate_dir(maintain: dict[str, Any]) -> str:
    """Where an unregistered revision goes (registry off or inside a DVC stage)."""
    return str(maintain.get("candidate_dir", "models/candidate"))


class Timings:
    """Wall seconds of each step as the flow sees them (task orchestration included)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

    def running(self) -> str:
        """The step after the last finished one (``STEPS``): where a crash happened."""
        done = [STEPS.index(n) for n in self.laps if n in STEPS]
        return STEPS[min(max(done) + 1, len(STEPS) - 1)] if done else STEPS[0]


def check_settings(params_path: str) -> None:
    """Refuse bad sweep, method or gate settings before any request runs.

    Args:
        params_path: the params file.

    Raises:
        SweepError, MethodConfigError, GateConfigError: names the file and key.
    """
    try:
        check_sweeps(
            load_section("maintain", params_path),
            load_section("unlearn", params_path),
            load_section("gates", params_path),
        )
    except SETTINGS_ERRORS as exc:
        raise type(exc)(f"settings in {params_path}: {exc}") from None


def revision_jobs(params_path: str, request: str | None) -> list[tuple[str | None, str | None]]:
    """What ``medunlearn revise`` runs: ``request``, else every pending ledger request in
    the order received, else ``maintain.request``.

    Args:
        params_path: the params file.
        request: a forget request file, or None.

    Returns:
        ``(request file, ledger id)`` pairs, one flow run each.
    """
    params = load_params(params_path)
    registry, _ = active_registry(params, project_root(params_path))
    ledger = active_ledger(params, project_root(params_path)) if registry else None
    if ledger is not None and not request and ledger.pending():
        return [(None, e["id"]) for e in ledger.pending()]
    return [(request, None)]


def run_revision(
    params_path: str, request: str | None, refresh_cache: bool, ledger_id: str | None
) -> dict[str, Any]:
    """One :func:`maintenance_flow` run on ``maintain.task_runner``.

    Args:
        params_path: the params file.
        request: a forget request file, or None (``ledger_id``, or ``maintain.request``).
        refresh_cache: recompute every sweep run and the validation.
        ledger_id: a pending ledger request's id, or None.

    Returns:
        The flow's result (``summary``, ``record``, ``candidates``, ...).
    """
    runner = task_runner(load_section("maintain", params_path))
    return maintenance_flow.with_options(task_runner=runner)(
        params_path, request, refresh_cache, ledger_id
    )
