"""What the registry and ledger commands do, with no printing.

They are the core of ``medunlearn registry | status | promote | rollback | request``.

The command line (``cli/``) parses, calls one of these and presents the result; these
functions read the project's ``params.yaml`` (its ``registry``, ``promotion`` and ``ledger``
sections), check the rules (free text naming a patient, a rejected request) and return plain
dicts that are also the commands' ``--json`` output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from medunlearn.config import load_params, project_root
from medunlearn.data.manifest import ManifestError, read_manifest_csv
from medunlearn.data.request import ForgetRequest, RequestError, check_request
from medunlearn.revision.ledger import Ledger, LedgerError, active_ledger, track_salt
from medunlearn.revision.privacy import check_project_text
from medunlearn.revision.registry import STAGES, Registry, RegistryError, active_registry

HEADLINE = (
    "retain_test_acc",
    "retain_test_balanced_acc",
    "forget_train_acc",
    "test_acc",
    "test_balanced_acc",
    "test_accuracy",
    "test_balanced_accuracy",
)


def open_registry(params_path: str) -> Registry:
    """The registry of the project that holds ``params_path``.

    Args:
        params_path: the project's params file.

    Returns:
        A :class:`~medunlearn.revision.registry.Registry` over the project's repository,
        configured by the ``registry`` and ``promotion`` sections.

    Raises:
        ConfigError: the params file is missing or invalid (names the key).
    """
    params = load_params(params_path)
    section = {**dict(params.get("registry") or {}), **dict(params.get("promotion") or {})}
    return Registry.from_params(section, project_root(params_path))


def open_ledger(params_path: str) -> Ledger:
    """The forget ledger of the project that holds ``params_path``.

    Args:
        params_path: the project's params file.

    Returns:
        The :class:`~medunlearn.revision.ledger.Ledger` named by its ``ledger`` section.

    Raises:
        LedgerError: ``ledger.enabled`` is false.
    """
    params = load_params(params_path)
    section = dict(params.get("ledger") or {})
    if not section.get("enabled", False):
        raise LedgerError(f"{params_path}: ledger.enabled is false")
    ledger = active_ledger(params, project_root(params_path))
    assert ledger is not None  # enabled
    return ledger


def listing(registry: Registry, model: str | None = None) -> list[dict[str, Any]]:
    """List the registered versions (``medunlearn registry``).

    One row per registered version: its stages, parent, reasons, headline metrics, push
    state and forget regression (``medunlearn registry``).

    Args:
        registry: the project's registry.
        model: one model's versions; None lists every model's.

    Returns:
        One dict per version, oldest first within each model.

    Raises:
        RegistryError: ``model`` is not registered (names the registered ones).
    """
    names = [model] if model else registry.models()
    if model and model not in registry.models():
        raise RegistryError(
            f"unknown model '{model}' (registered: {', '.join(registry.models()) or 'none'})"
        )
    rows = []
    for name in names:
        stages = registry.stages(name)
        for version in registry.versions(name):
            record = registry.record(name, version)
            metrics = record.get("metrics") or {}
            membership = metrics.get("membership") or {}
            here = [s for s in STAGES if stages.get(s) == version]
            regressions = registry.regressions(name, version)
            later: dict[str, list[str]] = {}  # request id -> revisions that applied it
            if "production" in here:  # requests applied in a revision that does not serve yet
                mine = {r["id"] for r in record.get("requests", [])}
                for other in registry.versions(name):
                    for r in registry.record(name, other).get("requests", []):
                        if r["id"] not in mine and other not in later.setdefault(r["id"], []):
                            later[r["id"]].append(other)
            waiting = [f"{rid} ({', '.join(vs)})" for rid, vs in later.items()]
            rows.append(
                {
                    "model": name,
                    "version": version,
                    "stages": here,
                    "parent": record.get("parent"),
                    "reasons": [r.get("reason") for r in record.get("requests", [])]
                    or [record.get("kind")],
                    "requests": [r.get("id") for r in record.get("requests", [])],
                    "gates_passed": (record.get("gates") or {}).get("passed"),
                    "caveats": list(record.get("caveats") or []),
                    "metrics": {k: metrics[k] for k in HEADLINE if metrics.get(k) is not None}
                    | ({"mia_auc": membership["auc"]} if membership.get("auc") is not None else {}),
                    "pushed": record.get("pushed"),
                    "push_command": record.get("push_command"),
                    "regression": regressions,
                    "not_yet_served": waiting,
                    "registered_at": record.get("registered_at"),
                }
            )
    return rows


def status(params_path: str) -> dict[str, Any]:
    """Tell where the project stands (``medunlearn status``).

    Where the project stands: per model its stage assignments, newest version and when it
    was registered, its pending forget requests, a half-done registry write, and whether a
    Prefect server is reachable (``PREFECT_API_URL``; without one every command starts a
    temporary server of its own).

    Args:
        params_path: the project's params file.

    Returns:
        ``project``, ``models`` (per model: ``stages``, ``latest``, ``latest_registered_at``,
        ``pending_requests``), ``registry_write_half_done``, ``serving`` and
        ``prefect_server`` (``url``, ``reachable``: None without a URL).

    Raises:
        ConfigError: the params file is missing or invalid.
    """
    params = load_params(params_path)
    root = project_root(params_path)
    registry = open_registry(params_path)
    ledger = active_ledger(params, root)
    models = []
    for name in registry.models():
        versions = registry.versions(name)
        newest = registry.record(name, versions[-1]) if versions else {}
        pending = []
        if ledger is not None:
            scoped = Ledger(ledger.path, model=name)
            pending = [e["id"] for e in scoped.pending()]
        models.append(
            {
                "model": name,
                "stages": registry.stages(name),
                "latest": versions[-1] if versions else None,
                "latest_registered_at": newest.get("registered_at"),
                "pending_requests": pending,
            }
        )
    url = os.environ.get("PREFECT_API_URL")
    server: dict[str, Any] = {"url": url, "reachable": None}
    if url:
        try:
            server["reachable"] = httpx.get(f"{url.rstrip('/')}/health", timeout=3).is_success
        except httpx.HTTPError:
            server["reachable"] = False
    return {
        "project": str(root),
        "models": models,
        "registry_write_half_done": registry.interrupted() or registry.orphans(),
        "serving": registry.served(),
        "prefect_server": server,
    }


def add_request(params_path: str, file: str) -> tuple[dict[str, Any], str | None]:
    """Append the forget request in ``file`` to the ledger as pending (``request add``).

    The request is checked against the data first, as ``revise`` would check it.

    Args:
        params_path: the project's params file.
        file: the request YAML or JSON.

    Returns:
        The ledger entry (``id``, ``reason``, ``status``, ...) and, when the ledger's salt
        could not be tracked by DVC, why (else None).

    Raises:
        RequestError: the file is not a valid request, or it does not fit the data.
        LedgerError: the ledger is off or refuses the entry.
    """
    ledger = open_ledger(params_path)
    request = ForgetRequest.load(file)
    check_against_data(params_path, request, file)
    entry = ledger.add(request)
    why = None if Path(f"{ledger.salt_path}.dvc").exists() else track_salt(ledger)
    return entry, why


def check_against_data(params_path: str, request: ForgetRequest, file: str) -> None:
    """Refuse a request ``revise`` would refuse, before it enters the ledger.

    It selects no training row of ``maintain.dataset``, or too many: the same
    :func:`~medunlearn.data.request.check_request`.

    Args:
        params_path: the project's params file.
        request: the parsed request.
        file: its file, named in the message.

    Raises:
        RequestError: the request does not fit the data, or the dataset is not prepared.
    """
    params = load_params(params_path)
    dataset = (params.get("maintain") or {}).get("dataset", "data/demo")
    manifest_path = project_root(params_path) / dataset / "manifest.csv"
    if not manifest_path.is_file():
        raise RequestError(
            f"{file}: cannot check it against the data: {manifest_path} does not exist "
            "(run `medunlearn prepare` first)"
        )
    try:
        manifest = read_manifest_csv(manifest_path)
    except ManifestError as exc:
        raise RequestError(f"{file}: cannot check it against the data: {exc}") from exc
    try:
        check_request(manifest, request, params.get("validation"))
    except RequestError as exc:
        raise RequestError(f"{file}: {exc}") from exc


def reject_request(ledger: Ledger, params_path: str, request_id: str, by: str, why: str) -> str:
    """Reject a forget request by a reviewer (``medunlearn request reject``).

    A reviewer's no: the request ends ``rejected: by NAME: WHY`` and is no longer carried
    by later revisions (e.g. a drift-triggered device deprecation whose candidate was not
    promoted). Pending requests, and requests applied only in revisions that never served
    in production, can be rejected; one that production served stays (a model that served
    without those rows must not get them back by a status change). The ledger file is
    committed alone when the registry is on.

    Args:
        ledger: the project's ledger.
        params_path: the project's params file.
        request_id: the ledger id.
        by: who rejects it (non-blank).
        why: why (non-blank; refused when it names a patient).

    Returns:
        The one line the command prints.

    Raises:
        LedgerError: a blank ``by``/``why``, an unknown id, an id already rejected, or a
            request applied in a version that served in production (names the rule).
        IdentifierInText: ``why`` names a patient.
    """
    check_project_text(params_path, {"--why": why})
    if not by.strip() or not why.strip():
        raise LedgerError("a rejection names who rejects (--by) and why (--why)")
    entry = next((e for e in ledger.entries() if e["id"] == request_id), None)
    if entry is None:
        raise LedgerError(f"{ledger.path}: no request {request_id}")
    if entry["status"].startswith("rejected"):
        raise LedgerError(f"request {request_id} is already {entry['status']}")
    params = load_params(params_path)
    registry, _ = active_registry(params, project_root(params_path))
    if registry is not None:  # whatever the status says: a resubmitted request can be
        # pending again while a served version carries it
        model = str((params.get("registry") or {}).get("model", "classifier"))
        served = {e.version for e in registry.events(model) if e.stage == "production"}
        carrying = [
            v
            for v in registry.versions(model)
            if any(r.get("id") == request_id for r in registry.record(model, v).get("requests", []))
        ]
        if served & set(carrying):
            raise LedgerError(
                f"request {request_id} was applied in {sorted(served & set(carrying))}, which "
                f"served in production: it stays applied"
            )
    ledger.set_status([request_id], f"rejected: by {by.strip()}: {why.strip()}")
    if registry is not None:
        registry.commit_files(
            [ledger.path], f"ledger: request {request_id} rejected by {by.strip()}"
        )
    return f"{request_id}: rejected by {by.strip()} (no longer carried by later revisions)"


def rejected_requests(params_path: str, record: dict) -> list[str]:
    """List the requests a revision carries that the ledger now says are rejected.

    Ids of the requests a revision ``record`` carries that the ledger now says are
    rejected (``medunlearn request reject``): such a revision must not be promoted.

    Args:
        params_path: the project's params file.
        record: a registered version's record.

    Returns:
        The rejected request ids it carries, in its order (empty without a ledger).
    """
    ledger = active_ledger(load_params(params_path), project_root(params_path))
    if ledger is None:
        return []
    status = {e["id"]: e["status"] for e in ledger.entries()}
    carried = [r.get("id") for r in record.get("requests", [])]
    return [i for i in carried if str(status.get(i, "")).startswith("rejected")]


def promote(
    registry: Registry,
    params_path: str,
    model: str,
    version: str,
    to: str,
    by: str,
    why: str,
    allow_regression: str | None = None,
    accept: str | None = None,
) -> dict[str, Any]:
    """Promote a version (``medunlearn promote``) after the command's own checks.

    Assign ``version`` to ``to`` (``medunlearn promote``) after the command's own checks:
    free text naming a patient, and requests the ledger has since rejected.

    Args:
        registry: the project's registry.
        params_path: the project's params file.
        model: the registered model.
        version: its version (``vX.Y.Z``).
        to: ``staging`` or ``production``.
        by: who promotes (recorded in the tag).
        why: why (recorded in the tag).
        allow_regression: the reason to serve a version lacking applied forget requests.
        accept: the reason to promote to production despite the card's caveats.

    Returns:
        The registry's answer with ``model``, ``version``, ``stage`` and ``unchanged``.

    Raises:
        RegistryError: a promotion rule says no (names the rule).
        IdentifierInText: the free text names a patient.
    """
    check_project_text(
        params_path, {"--why": why, "--allow-regression": allow_regression, "--accept": accept}
    )
    refused = rejected_requests(params_path, registry.record(model, version))
    if refused:
        raise RegistryError(
            f"rejected request: {model} {version} carries request(s) "
            f"{', '.join(refused)}, rejected in the ledger; revise without them"
        )
    out = registry.promote(model, version, to, by, why, allow_regression, accept)
    return {
        "model": model,
        "version": version,
        "stage": to,
        **out,
        "unchanged": bool(out.get("unchanged")),
    }


def rollback(
    registry: Registry,
    params_path: str,
    model: str,
    stage: str,
    to: str | None,
    by: str,
    why: str,
    allow_regression: str | None = None,
) -> dict[str, Any]:
    """Assign ``stage`` its previous (or the named) version again (``medunlearn rollback``).

    Args:
        registry: the project's registry.
        params_path: the project's params file.
        model: the registered model.
        stage: ``candidate``, ``staging`` or ``production``.
        to: the version to assign; None: the stage's previous one.
        by: who rolls back (recorded in the tag).
        why: why (recorded in the tag).
        allow_regression: the reason to serve a version lacking applied forget requests.

    Returns:
        The registry's answer (``from``, ``to``, ``served``, ``regression``, ``lacks``) with
        ``model``, ``stage`` and ``serving_dir``.

    Raises:
        RegistryError: a rule says no (names it).
        IdentifierInText: the free text names a patient.
    """
    check_project_text(params_path, {"--why": why, "--allow-regression": allow_regression})
    out = registry.rollback(model, stage, to, by, why, allow_regression)
    return {"model": model, "stage": stage, **out, "serving_dir": str(registry.serving_dir)}
