"""The plan of one revision: what the maintenance flow will do, decided before any work.

Carved out of the maintenance flow (issue 28) so the flow only composes tasks. A plan
resolves the settings (``maintain``, ``validation``, ``unlearn``, ``gates``), the starting
model (the registry's production version, else ``maintain.deployed``), the forget request
(added to and taken from the ledger when the registry and ledger are on) and every earlier
request the revision must keep forgotten: *inherited* (the starting model forgot it; only
re-checked) or *carried* (unlearned again with the new one). It also settles ledger
entries and builds the registry record's request fields. No Prefect: the flow passes its
run logger in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.config import load_params, load_section, project_root
from medunlearn.data.manifest import read_manifest_csv
from medunlearn.data.request import ForgetRequest, RequestError, check_request
from medunlearn.revision.candidates import CandidateResult, evidence_caveats
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
from medunlearn.revision.registry import Registry, active_registry
from medunlearn.unlearn.sweep import check_sweeps

Log = logging.Logger | logging.LoggerAdapter
STEPS = ("load", "validate", "unlearn", "compose", "evaluate", "export", "report", "register")


@dataclass
class RevisionPlan:
    """Everything one revision needs to know before it starts (see :func:`plan_revision`).

    Attributes:
        params_path: the params file.
        params: its whole content, checked.
        maintain: the ``maintain`` section (dataset, sweep, reports, work_dir, ...).
        validation: the ``validation`` section.
        unlearn: the ``unlearn`` section.
        bounds: the ``gates`` section.
        registry: the project's registry, or None when it is off.
        model_name: ``registry.model``.
        deployed_path: the starting checkpoint (production's files, else
            ``maintain.deployed``).
        parent: the production version the revision starts from, or None.
        parent_record: its registry record, or None.
        ledger: the forget ledger (registry and ledger on), or None.
        ledger_id: the ledger entry being revised, or None.
        entry: that entry, or None.
        request: what the revision forgets, parsed once: a
            :class:`~medunlearn.data.request.ForgetRequest` (with its carried and inherited
            requests under the ledger).
        manifest: the dataset's manifest when the plan read it (the ledger resolves
            requests against it), handed on so it is read once; None otherwise.
        kept: every earlier applied request the revision keeps, as ``(id, request)``.
        carried: the part of ``kept`` unlearned again (the starting model has not forgotten
            it).
    """

    params_path: str
    params: dict[str, Any]
    maintain: dict[str, Any]
    validation: dict[str, Any]
    unlearn: dict[str, Any]
    bounds: dict[str, Any]
    registry: Registry | None
    model_name: str
    deployed_path: str
    parent: str | None = None
    parent_record: dict[str, Any] | None = None
    ledger: Ledger | None = None
    ledger_id: str | None = None
    entry: dict[str, Any] | None = None
    request: Any = None
    manifest: pd.DataFrame | None = None
    kept: list[tuple[str, Any]] = field(default_factory=list)
    carried: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def reports(self) -> dict[str, str]:
        """``maintain.reports``: the report files' paths."""
        return self.maintain["reports"]

    @property
    def work_dir(self) -> str:
        """``maintain.work_dir``: the sweep's run cache and scratch files."""
        return str(Path(self.maintain.get("work_dir", ".cache/maintain")))

    @property
    def candidate_dir(self) -> str:
        """Where an unregistered revision goes (registry off or inside a DVC stage)."""
        return str(self.maintain.get("candidate_dir", "models/candidate"))

    @property
    def select_by(self) -> str:
        """``maintain.select_by``: the metric that picks among passing candidates."""
        return str(self.maintain.get("select_by", "retain_test_acc"))

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages a new revision is registered in (``promotion.auto_staging``)."""
        auto = (self.params.get("promotion") or {}).get("auto_staging")
        return ("candidate", "staging") if auto else ("candidate",)

    @property
    def staging_home(self) -> Path:
        """The folder the revision's files are staged in before they move into place."""
        if self.registry is not None:
            return self.registry.root / self.registry.models_dir
        return Path(self.candidate_dir).parent

    def next_version(self) -> str | None:
        """The version the revision will be registered as (None: registry off).

        Returns:
            The next minor version after the parent's (``v1.1.0`` after ``v1.0.0``).
        """
        if self.registry is None:
            return None
        return self.registry.next_version(self.model_name, "minor", self.parent)

    def final_dir(self, version: str | None) -> Path:
        """Where the revision's files will be once registered (relative to the project).

        Args:
            version: the planned version, or None (registry off).

        Returns:
            ``models/<model>/<version>``, or ``maintain.candidate_dir``.
        """
        if self.registry is not None and version:
            return self.registry.files_dir(self.model_name, version).relative_to(self.registry.root)
        return Path(self.candidate_dir)

    def adopt(self, request: ForgetRequest) -> None:
        """Take the earlier requests from the request file itself (no ledger).

        Without a ledger, the earlier requests come from the request file itself
        (``medunlearn reproduce`` writes one that lists them).

        Args:
            request: the loaded request.
        """
        if self.ledger is None:
            self.carried = [(r.hash, r) for r in request.carried]
            self.kept = [*((r.hash, r) for r in request.inherited), *self.carried]

    def complete_record(
        self,
        record: dict[str, Any],
        selected: CandidateResult,
        baseline: dict[str, Any],
        failed: list[dict[str, Any]],
        rechecks: dict[str, Any],
    ) -> dict[str, Any]:
        """Add the plan's fields to a revision record (``revision.records.unlearned_record``).

        Args:
            record: the record so far.
            selected: the selected candidate.
            baseline: the untouched deployed model under the same gates.
            failed: runs rejected before evaluation (``candidates.failed_run``).
            rechecks: each kept request's re-check gates on the selected candidate.

        Returns:
            The record with ``failed_runs``, ``deployed_gates_passed``, ``caveats`` and,
            with a ledger, ``requests`` (kept ones first), ``inherited`` and ``rechecks``.
        """
        record["failed_runs"] = [{k: f[k] for k in ("name", "kind", "reason")} for f in failed]
        record["deployed_gates_passed"] = bool(baseline.get("passed"))
        record["caveats"] = evidence_caveats(selected.gates, baseline)
        if self.ledger is not None and self.entry is not None:
            applied = {e["id"]: e for e in self.ledger.applied()}
            record["requests"] = [record_entry(applied[i]) for i, _ in self.kept] + [
                record_entry(self.entry)
            ]
            again = {i for i, _ in self.carried}
            # applied through the parent's weights, not unlearned again here
            record["inherited"] = [i for i, _ in self.kept if i not in again]
            record["rechecks"] = rechecks
        return record


def plan_revision(
    params_path: str,
    request: str | dict[str, Any] | None,
    ledger_id: str | None,
    log: Log,
) -> RevisionPlan:
    """Resolve one revision's settings, starting model, request and kept requests.

    A registry write a killed run left half done is repaired first. With the registry and
    the ledger on, a request given as a file or mapping is checked against the data and
    added to the ledger (a request the data cannot serve never enters it); ``ledger_id``
    names a pending entry instead.

    Args:
        params_path: the params file.
        request: a request file or mapping; None: ``ledger_id``, else ``maintain.request``.
        ledger_id: a pending ledger entry's id, or None.
        log: the run's logger.

    Returns:
        The plan.

    Raises:
        SweepError, MethodConfigError, GateConfigError: a bad sweep entry or bound.
        RequestError: the request does not fit the data (names the file).
        AlreadyApplied: the entry was applied already.
        LedgerError: an unknown or non-pending entry.
    """
    maintain = load_section("maintain", params_path)
    unlearn = load_section("unlearn", params_path)
    bounds = load_section("gates", params_path)
    check_sweeps(maintain, unlearn, bounds)  # a bad entry or bound fails before any data
    params = load_params(params_path)
    root = project_root(params_path)
    registry, registry_off = active_registry(params, root)
    if registry is not None and (registry.interrupted() or registry.orphans()):  # killed runs
        log.warning("registry repaired first: %s", registry.repair())
    plan = RevisionPlan(
        params_path=params_path,
        params=params,
        maintain=maintain,
        validation=load_section("validation", params_path),
        unlearn=unlearn,
        bounds=bounds,
        registry=registry,
        model_name=str((params.get("registry") or {}).get("model", "classifier")),
        deployed_path=maintain["deployed"],
        request=request or maintain["request"],
    )
    Path(plan.work_dir).mkdir(parents=True, exist_ok=True)
    if registry is None:
        log.info("registry off (%s): the revision goes to %s", registry_off, plan.candidate_dir)
        plan.request = load_request(plan.request)
        return plan
    plan.parent = registry.current(plan.model_name, "production")
    if plan.parent is None:
        log.warning(
            "registry has no production version of '%s': using maintain.deployed %s",
            plan.model_name,
            plan.deployed_path,
        )
    else:
        plan.deployed_path = str(registry.production_checkpoint(plan.model_name, plan.parent))
        plan.parent_record = registry.record(plan.model_name, plan.parent)
    plan.ledger = active_ledger(params, root)
    # identifiers in reports, hashes and the ledger are salted with the project's secret
    use_project_salt(params, root, create=plan.ledger is not None)
    if plan.ledger is not None:
        take_from_ledger(plan, ledger_id, log)
    else:
        plan.request = load_request(plan.request)
    return plan


def load_request(request: str | dict[str, Any] | ForgetRequest) -> ForgetRequest:
    """A forget request, parsed once.

    Args:
        request: a request file, its mapping (a flow parameter), or a parsed request.

    Returns:
        The parsed request.

    Raises:
        RequestError: the file or mapping is not a valid request (names the file or
            ``request parameter`` and the key).
    """
    if isinstance(request, ForgetRequest):
        return request
    if isinstance(request, dict):
        return ForgetRequest.from_dict(request, "request parameter")
    return ForgetRequest.load(request)


def take_from_ledger(plan: RevisionPlan, ledger_id: str | None, log: Log) -> None:
    """Fill the plan's ledger fields.

    The entry (added first when ``ledger_id`` is None), the kept requests split into
    inherited and carried, and the request to load.

    Args:
        plan: a plan with its ledger set.
        ledger_id: a pending entry's id, or None (add ``plan.request``).
        log: the run's logger.

    Raises:
        RequestError: the request does not fit the data (names the file).
        AlreadyApplied: the entry was applied already.
        LedgerError: an unknown or non-pending entry.
    """
    ledger = plan.ledger
    assert ledger is not None
    manifest = read_manifest_csv(Path(plan.maintain["dataset"]) / "manifest.csv")
    plan.manifest = manifest
    if ledger_id is None:
        wanted = plan.request
        where = "request parameter" if isinstance(wanted, dict) else str(wanted)
        plain = load_request(wanted)
        try:  # a request the data cannot serve never enters the ledger
            check_request(manifest, plain, plan.validation)
        except RequestError as exc:
            raise RequestError(f"{where}: {exc}") from exc
        ledger_id = ledger.add(plain)["id"]
    entry = next((e for e in ledger.entries() if e["id"] == ledger_id), None)
    if entry is None:
        raise LedgerError(f"{ledger.path}: no request {ledger_id}")
    if entry["status"].startswith("applied in "):
        raise AlreadyApplied(f"request {ledger_id} was already {entry['status']}")
    if entry["status"] != "pending":
        raise LedgerError(f"request {ledger_id} is not pending: {entry['status']}")
    plan.ledger_id, plan.entry = ledger_id, entry
    plan.kept = [(i, r) for i, r in ledger.carried(manifest) if i != ledger_id]
    inherited, plan.carried = split_carried(plan.kept, plan.parent_record)
    plan.request = replace(
        ledger.request(entry, manifest),
        carried=tuple(r for _, r in plan.carried),
        inherited=tuple(r for _, r in inherited),
    )
    log.info(
        "ledger request %s (%s); keeping %d applied request(s): %d forgotten by %s, "
        "%d forgotten again",
        ledger_id,
        entry["reason"],
        len(plan.kept),
        len(inherited),
        plan.parent or plan.deployed_path,
        len(plan.carried),
    )


def ledger_hook(plan: RevisionPlan, log: Log):
    """Make the registry's pre-commit hook that marks the request applied.

    The registry's pre-commit hook: mark the request applied in the new version and
    return the ledger's files, so they go into the revision's commit.

    Args:
        plan: the revision's plan.
        log: the run's logger.

    Returns:
        ``hook(version) -> [paths]``, or None without a ledger entry.
    """
    ledger, ledger_id = plan.ledger, plan.ledger_id
    if ledger is None or ledger_id is None:
        return None

    def update(version: str) -> list[Path]:
        ledger.set_status([ledger_id], f"applied in {version}")
        salt_dvc = Path(f"{ledger.salt_path}.dvc")
        if not salt_dvc.exists():
            why = track_salt(ledger)
            if why:
                log.warning("ledger salt not tracked by DVC: %s", why)
        return [ledger.path, ledger.path.parent / ".gitignore", salt_dvc]

    return update


def mark_refused(params_path: str, ledger: Ledger, ledger_id: str, why: str, log: Log) -> None:
    """Mark a request refused and commit the ledger file alone.

    Mark a request ``rejected: why`` (or give it ``why`` when that is a whole status,
    ``failed: ...`` or ``rejected: ...``) and commit the ledger file alone (no revision
    commit will carry it, and an unattended run must not leave the ledger uncommitted).

    Args:
        params_path: the params file.
        ledger: the project's ledger.
        ledger_id: the entry.
        why: the reason, or a whole status.
        log: the run's logger; a failed commit is logged and the status stays.
    """
    status = why if why.startswith(("failed: ", "rejected: ")) else f"rejected: {why}"
    ledger.set_status([ledger_id], status)
    registry, _ = active_registry(load_params(params_path), project_root(params_path))
    if registry is None:
        return
    try:
        kind = status.split(":", 1)[0]
        registry.commit_files([ledger.path], f"ledger: request {ledger_id} {kind}")
    except Exception as exc:  # noqa: BLE001 - the rejection stands; the commit can follow
        log.warning("ledger rejection of %s not committed: %s", ledger_id, exc)


def settle(
    params_path: str,
    request: str | dict[str, Any] | None,
    ledger_id: str | None,
    status: str,
    log: Log,
) -> None:
    """Settle a tried request's ledger entry and commit the ledger.

    Give a tried request's ledger entry ``status`` if it is still pending (the flow may
    have settled it already) and commit the ledger. A request that never entered the
    ledger (unreadable, or refused before it was added) has nothing to settle.

    Args:
        params_path: the params file.
        request: the run's request file or mapping, or None.
        ledger_id: the run's ledger entry, or None (found from ``request``).
        status: ``rejected: ...`` or ``failed: ...``.
        log: the run's logger.
    """
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
    mark_refused(params_path, ledger, entry["id"], status, log)


class StepClock:
    """Wall seconds of each step as the flow sees them (task orchestration included)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.started_at = time.time()
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Close step ``name`` (one of :data:`STEPS`).

        Args:
            name: the step just finished.
        """
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

    def running(self) -> str:
        """The step after the last finished one: where a crash happened.

        Returns:
            A name from :data:`STEPS`.
        """
        done = [STEPS.index(n) for n in self.laps if n in STEPS]
        return STEPS[min(max(done) + 1, len(STEPS) - 1)] if done else STEPS[0]
