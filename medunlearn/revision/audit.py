"""``medunlearn audit MODEL VERSION``: a per-example membership audit of a registered revision.

A revision's gates compare the forgotten images with matched held-out images as two groups
(``medunlearn.evidence.membership``). That can look clean while a few examples stay recognisable; the
stronger test calibrates *each* forgotten example against reference models that never saw
it: offline LiRA (``medunlearn.evidence.audit``, the statistic the benchmark reports). Here the
references are K retrains of the deployed model's recipe on **retain-train** (every
forgotten row of every request the version applied left out; best epoch chosen on the
retained validation rows, as the benchmark's references), with seeds ``s + 1 ... s + K``
where ``s`` is the deployed model's seed. They are cached by
:class:`medunlearn.models.bank.ModelBank` under a key of every input (dataset manifest,
training rows, their pixels, architecture, recipe, seed, training code), so a second audit,
or one with a larger K, trains only what it lacks.

Inputs, all from the registry: the version's record (its requests, data fingerprint, cohort
counts, the dataset its maintenance run read and its gate settings) and its verified
checkpoint; the recipe is the ``train`` section recorded by the nearest trained ancestor
(``params.yaml``'s ``train`` section when none is registered); requests are rebuilt from
the record (identifier selectors from the forget ledger's tokens and salt, as
``medunlearn.revision.ledger.Ledger.request`` does for carried requests). Members are the
forget-train rows of those requests, non-members the matched held-out rows the gates use
(``medunlearn.evidence.membership.heldout_reference``; pool chosen by ``choose_pool`` with the audited
model, which trained on neither held-out split).

The result goes to ``registry/<model>/<version>/audit.json`` (written atomically next to the
immutable record, which is never touched), the card (``card.md``, ``card.json`` and
``report.html``, with the run's validation and plot when the revision's files are here) is
regenerated to show it, and both are committed like the record (only those paths). No raw
identifier is written: requests appear by their ledger ids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import fisher_exact, mannwhitneyu
from torch.utils.data import ConcatDataset

from medunlearn.atomic import write_json, write_text
from medunlearn.data.dataset import open_splits
from medunlearn.data.images import LabelledImages
from medunlearn.data.manifest import ManifestError
from medunlearn.data.request import Cohorts, ForgetRequest, RequestError, build_cohorts
from medunlearn.errors import Refusal
from medunlearn.evidence.audit import (
    logit_confidence,
    member_scores,
    offline_lira,
    reference_statistics,
)
from medunlearn.evidence.gates import GateConfigError, resolve_bounds
from medunlearn.evidence.membership import choose_pool
from medunlearn.evidence.metrics import evidence_sets
from medunlearn.models.bank import ModelBank
from medunlearn.models.checkpoint import CheckpointError, load_checkpoint
from medunlearn.models.inference import predict_logits
from medunlearn.models.training import TrainConfig
from medunlearn.revision.card import card_files
from medunlearn.revision.ledger import ID_KEYS, Ledger, LedgerError
from medunlearn.revision.registry import Registry, RegistryError, in_dvc_stage
from medunlearn.revision.registry.git import _changed
from medunlearn.revision.report import report_inputs
from medunlearn.versioning import dataset_fingerprint

AUDIT_FILE = "audit.json"
REFERENCE_ROLE = "audit-reference"
DEFAULT_CACHE = ".cache/audit"


class AuditRefused(Refusal, ValueError):
    """The audit cannot run as asked; the message says why in one line.

    Unknown version, nothing forgotten, K < 1, or data that is not the revision's.
    """


@dataclass
class Reference:
    """One reference model of an audit: a retrain on retain-train with ``seed``."""

    seed: int
    model: torch.nn.Module
    seconds: float  # the training's wall seconds (also when it came from the cache)
    cpu_seconds: float | None
    cached: bool  # True: loaded from the bank, nothing trained
    key: str  # the bank key (``<cache>/models/<key>.pt``)


@dataclass
class AuditPlan:
    """Everything an audit needs, resolved from the registry before any training."""

    model: str
    version: str
    record: dict[str, Any]
    reason: str
    request_ids: list[str]
    dataset_dir: Path
    data_fingerprint: str
    cohorts: Cohorts
    target: torch.nn.Module
    bank: ModelBank
    retain_train: LabelledImages
    retain_val: LabelledImages
    seeds: list[int]
    deployed_seed: int
    recipe_source: str
    recipe_epochs: int
    epochs: int
    bounds: dict[str, float]
    caveats: list[str] = field(default_factory=list)


def check_arguments(reference_models: int, epochs: int | None) -> None:
    """Refuse impossible settings before anything is loaded.

    Args:
        reference_models: K, the number of reference models.
        epochs: the reference trainings' epochs override, or None (the recipe's).

    Raises:
        AuditRefused: K < 1 or epochs < 1.
    """
    if reference_models < 1:
        raise AuditRefused(
            f"--reference-models must be at least 1 (got {reference_models}); LiRA needs 2 "
            "or more reference models to estimate how an unseen example scores"
        )
    if epochs is not None and epochs < 1:
        raise AuditRefused(f"--epochs must be at least 1 (got {epochs})")


def audited_record(registry: Registry, name: str, version: str) -> dict[str, Any]:
    """The record of a version that forgot something.

    Args:
        registry: the project's registry.
        name: the registered model.
        version: its version (``v1.1.0``).

    Returns:
        The revision record.

    Raises:
        AuditRefused: unknown model or version, or a version without forget requests.
    """
    if name not in registry.models():
        known = ", ".join(registry.models()) or "none"
        raise AuditRefused(f"unknown model '{name}' (registered: {known})")
    try:
        record = registry.record(name, version)
    except RegistryError as exc:
        raise AuditRefused(str(exc)) from exc
    if not record.get("requests"):
        raise AuditRefused(
            f"{name} {version} forgot nothing ({record.get('kind', 'no requests')}): there are "
            "no forgotten rows to audit; audit a revision made by `medunlearn revise`"
        )
    return record


def recorded_requests(
    entries: list[dict[str, Any]], manifest: Any, ledger: Ledger | None
) -> list[ForgetRequest]:
    """The requests a record lists, rebuilt on ``manifest``.

    Selectors without identifiers are taken as recorded; identifier selectors hold the
    ledger's salted tokens and are matched against the manifest's ids with the ledger's salt
    (rows no longer in the data are skipped, as for carried requests).

    Args:
        entries: the record's ``requests`` (oldest first).
        manifest: the dataset's manifest.
        ledger: the project's ledger (its salt), or None.

    Returns:
        One request per entry, in order.

    Raises:
        AuditRefused: an identifier selector that no ledger can resolve.
    """
    out = []
    for entry in entries:
        selector = dict(entry.get("selector") or {})
        if not any(k in selector for k in ID_KEYS):
            out.append(
                ForgetRequest(
                    entry["reason"], selector, entry.get("fraction"), int(entry.get("seed") or 0)
                )
            )
            continue
        if ledger is None or not str(entry.get("id", "")).startswith("req-"):
            raise AuditRefused(
                f"request {entry.get('id')} selects identifiers and is not in the forget "
                "ledger: its record keeps only their hashes, so its rows cannot be found"
            )
        try:
            out.append(ledger.request(entry, manifest, complete=False))
        except (LedgerError, RequestError) as exc:
            raise AuditRefused(f"request {entry.get('id')}: {exc}") from exc
    return out


def training_recipe(
    registry: Registry, name: str, record: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The training recipe of the deployed model a revision descends from.

    Args:
        registry: the project's registry.
        name: the registered model.
        record: the audited version's record.
        params: the whole params file (its ``train`` section is the fallback).

    Returns:
        ``(train section, where it came from)``.

    Raises:
        AuditRefused: no registered ancestor records one and params has no ``train``.
    """
    seen: set[str] = set()
    current: dict[str, Any] | None = record
    while current is not None:
        train = (current.get("params") or {}).get("train")
        if current.get("kind") == "trained" and train:
            return dict(train), f"{name} {current.get('version')} record"
        parent = current.get("parent")
        if not parent or parent in seen or parent not in registry.versions(name):
            break
        seen.add(parent)
        current = registry.record(name, parent)
    if isinstance(params.get("train"), dict):
        return dict(params["train"]), "params.yaml train section"
    raise AuditRefused(
        f"no training recipe: no registered ancestor of {name} {record.get('version')} records "
        "one and the params file has no train section"
    )


def reference_seeds(deployed_seed: int, k: int) -> list[int]:
    """Choose the seeds of the K reference models.

    Seeds of the K reference models: ``deployed_seed + 1 ... + k``, never the deployed
    model's own.

    Args:
        deployed_seed: the deployed model's training seed.
        k: the number of reference models.

    Returns:
        The seeds, in order (a larger K keeps the smaller K's seeds, so their cache).
    """
    return [deployed_seed + 1 + i for i in range(k)]


def plan_audit(
    registry: Registry,
    name: str,
    version: str,
    params: dict[str, Any],
    reference_models: int,
    epochs: int | None = None,
    cache_dir: str | Path | None = None,
) -> AuditPlan:
    """Resolve an audit's inputs from the registry (see the module docstring).

    Args:
        registry: the project's registry.
        name: the registered model.
        version: the version to audit.
        params: the whole params file (``maintain``, ``gates``, ``ledger``, ``train``,
            optional ``audit.cache_dir``).
        reference_models: K.
        epochs: the references' epochs, overriding the recipe's (faster, weaker).
        cache_dir: the model bank's folder (default ``audit.cache_dir``, ``.cache/audit``).

    Returns:
        The plan; nothing has been trained.

    Raises:
        AuditRefused: any input that cannot give a meaningful audit (one line, why).
    """
    check_arguments(reference_models, epochs)
    record = audited_record(registry, name, version)
    root = registry.root
    recorded = dict((record.get("params") or {}).get("maintain") or {})
    maintain = dict(params.get("maintain") or {})
    dataset = recorded.get("dataset") or maintain.get("dataset")
    if not dataset:
        raise AuditRefused(f"{name} {version} names no dataset and maintain.dataset is unset")
    places = [Path(dataset)] if Path(dataset).is_absolute() else [root / dataset, Path(dataset)]
    dataset_dir = next((p for p in places if (p / "dataset.json").is_file()), places[0])
    if not (dataset_dir / "dataset.json").is_file():
        raise AuditRefused(f"{dataset_dir}: dataset not found (`dvc pull data.dvc`?)")
    fingerprint = dataset_fingerprint(dataset_dir)
    if record.get("data_fingerprint") and record["data_fingerprint"] != fingerprint:
        raise AuditRefused(
            f"{dataset_dir} is not the data {name} {version} was revised on (content differs "
            f"from its record; data version {record.get('data_version')}): check it out first"
        )
    try:
        splits = open_splits(dataset_dir, float(maintain.get("max_in_memory_mb", 1024)))
        ledger_section = dict(params.get("ledger") or {})
        ledger_file = root / ledger_section.get("path", "ledger/requests.jsonl")
        ledger = Ledger(ledger_file) if ledger_file.parent.is_dir() else None
        *earlier, last = recorded_requests(record["requests"], splits.manifest, ledger)
        request = replace(last, carried=tuple(earlier))
        cohorts = build_cohorts(
            splits.manifest,
            splits.train,
            splits.val,
            splits.test,
            splits.info.class_names,
            request,
        )
    except (ManifestError, RequestError, LedgerError) as exc:
        raise AuditRefused(f"{name} {version}: {exc}") from exc
    recorded_count = (record.get("counts") or {}).get("forget_train")
    rebuilt = cohorts.masks.counts["forget_train"]
    if recorded_count is not None and int(recorded_count) != rebuilt:
        raise AuditRefused(
            f"{name} {version}: its requests select {rebuilt} training rows here but the "
            f"record says {recorded_count}: not the data or requests it was revised on"
        )
    try:
        target, meta = load_checkpoint(registry.production_checkpoint(name, version))
    except (RegistryError, CheckpointError) as exc:
        raise AuditRefused(str(exc)) from exc
    if list(meta.class_names) != list(splits.info.class_names):
        raise AuditRefused(
            f"{name} {version}: model classes {meta.class_names} differ from the dataset's "
            f"{splits.info.class_names} ({dataset_dir})"
        )
    recipe, source = training_recipe(registry, name, record, params)
    gates = (record.get("params") or {}).get("gates")
    try:
        bounds = resolve_bounds(last.reason, gates if gates is not None else params.get("gates"))
    except GateConfigError as exc:
        raise AuditRefused(f"{name} {version}: {exc}") from exc
    cohorts = choose_pool(cohorts, target, bounds["alpha"], bounds["mia_auc_margin"])
    fields = set(TrainConfig.__dataclass_fields__) - {"seed"}
    train_recipe = {k: v for k, v in recipe.items() if k in fields}
    recipe_epochs = int(train_recipe.get("epochs", TrainConfig.epochs))
    used_epochs = int(epochs) if epochs is not None else recipe_epochs
    train_recipe["epochs"] = used_epochs
    caveats = []
    if used_epochs < recipe_epochs:
        caveats.append(
            f"reference models trained {used_epochs} epoch(s), the deployed recipe "
            f"{recipe_epochs}: they calibrate a weaker model than the one deployed"
        )
    architecture = meta.architecture
    info = splits.info
    cache = Path(cache_dir or (params.get("audit") or {}).get("cache_dir") or DEFAULT_CACHE)
    bank = ModelBank(
        cache / "models",
        {"name": architecture["name"], "kwargs": dict(architecture.get("kwargs") or {})},
        train_recipe,
        info.class_names,
        info.channels,
        info.image_size,
        dataset_dir,
    )
    deployed_seed = int(recipe.get("seed", 0))
    retain_val = cohorts.retain_val if len(cohorts.retain_val) else cohorts.retain_train
    return AuditPlan(
        model=name,
        version=version,
        record=record,
        reason=last.reason,
        request_ids=[str(r.get("id")) for r in record["requests"]],
        dataset_dir=dataset_dir,
        data_fingerprint=fingerprint,
        cohorts=cohorts,
        target=target,
        bank=bank,
        retain_train=cohorts.retain_train,
        retain_val=retain_val,
        seeds=reference_seeds(deployed_seed, reference_models),
        deployed_seed=deployed_seed,
        recipe_source=source,
        recipe_epochs=recipe_epochs,
        epochs=used_epochs,
        bounds=bounds,
        caveats=caveats,
    )


def train_reference(
    bank: ModelBank, train: LabelledImages, val: LabelledImages, seed: int
) -> Reference:
    """Get one reference model: from the bank, or trained and banked.

    One reference model: from the bank, or trained on ``train`` (best epoch on ``val``)
    and stored there.

    Args:
        bank: the audit's model bank (architecture and recipe).
        train: retain-train.
        val: the retained validation rows.
        seed: the reference's seed.

    Returns:
        The reference model with its cost and whether it came from the cache.
    """
    key = bank.key(train, val, seed)
    model, cost, cached = bank.get(train, val, seed, REFERENCE_ROLE)
    return Reference(seed, model, cost["seconds"], cost.get("cpu_seconds"), cached, key)


def rows_only(model: torch.nn.Module) -> Any:
    """Make a logits function that computes only the rows it is given.

    A logits function of ``model`` that computes only the rows it is given (a
    :class:`LogitCache` computes each row's whole split: K times the training split here).

    Args:
        model: the model.

    Returns:
        ``predict(dataset) -> (logits, labels)``, parts of a ``ConcatDataset`` in order.
    """

    def predict(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
        out = [predict_logits(model, d) for d in parts if len(d)]
        if not out:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

    return predict


def banked(plan: AuditPlan, seed: int) -> bool:
    """Tell whether the bank already holds the reference model of ``seed``.

    Whether the bank already holds the reference model of ``seed`` (a file that does not
    load is retrained by :func:`train_reference` all the same).

    Args:
        plan: the audit's plan.
        seed: a reference seed.

    Returns:
        True when its checkpoint is on disk.
    """
    key = plan.bank.key(plan.retain_train, plan.retain_val, seed)
    return (plan.bank.cache_dir / f"{key}.pt").is_file()


def audit_statistics(
    cohorts: Cohorts, references: list[torch.nn.Module], target: torch.nn.Module
) -> dict[str, Any]:
    """Run offline LiRA of ``target`` on the forgotten rows against matched held-out rows.

    The cohorts' forget-train rows (members) against matched held-out rows, calibrated on
    ``references``, with two one-sided tests.

    ``auc_p_value``: Mann-Whitney U that members score higher than non-members;
    ``flagged_p_value``: Fisher's exact test that members are flagged (score p-value below
    0.05) more often than the matched non-members. Members are compared with non-members,
    never with the nominal 5% alone: a model trained or fine-tuned differently from the
    references (every unlearned model) shifts both sides' scores, and non-members then get
    flagged far above 5% too (``nonmember_flag_rate`` says by how much). Both tests treat
    images as independent.

    Args:
        cohorts: the request's cohorts (held-out pool chosen).
        references: the K reference models (never trained on the members).
        target: the audited model.

    Returns:
        ``LiraResult`` fields plus the two p-values, the matching and the pool.
    """
    held = evidence_sets(cohorts)[0]
    ref_m, ref_n = reference_statistics(references, held.members, held.nonmembers, rows_only)
    predict = rows_only(target)
    t_m = logit_confidence(target, held.members, predict)
    t_n = logit_confidence(target, held.nonmembers, predict)
    lira = offline_lira(t_m, t_n, ref_m, ref_n).to_dict()
    scores = member_scores(t_m, t_n, ref_m, ref_n)
    auc_p = flagged_p = nonmember_flagged = None
    if scores is not None:
        s_m, s_n = scores
        auc_p = float(mannwhitneyu(s_m, s_n, alternative="greater").pvalue)
        f_m, n = lira["flagged"], len(s_m)
        nonmember_flagged, m = int(np.sum(1 - s_n < 0.05)), len(s_n)
        table = [[f_m, n - f_m], [nonmember_flagged, m - nonmember_flagged]]
        flagged_p = float(fisher_exact(table, alternative="greater").pvalue)
    return {
        **lira,
        "auc_p_value": auc_p,
        "flagged_p_value": flagged_p,
        "nonmember_flagged": nonmember_flagged,
        "nonmember_flag_rate": None
        if nonmember_flagged is None
        else nonmember_flagged / lira["n_nonmembers"],
        "matching": held.sample.summary(),
        "pool_splits": list(cohorts.pool_splits),
    }


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) and value < 1e-3 else f"{value:.3f}"


def verdict(stats: dict[str, Any], bounds: dict[str, float]) -> tuple[str, str]:
    """The audit's status and its one-line verdict: what it shows and what it cannot.

    ``signal``: members score higher than matched non-members, significantly (p < alpha)
    and materially (AUC > 0.5 + mia_auc_margin), or are flagged more often, significantly
    and by more than that margin; ``underpowered``: fewer than ``min_members`` members or
    fewer than two references (then no statistic at all); ``no signal`` otherwise. When
    non-members are flagged at more than twice the nominal 5%, the references do not
    calibrate this model and the verdict says so.

    Args:
        stats: :func:`audit_statistics`' result.
        bounds: the reason's gate bounds (``alpha``, ``mia_auc_margin``, ``min_members``).

    Returns:
        ``(status, verdict)``.
    """
    k, n = stats["n_references"], stats["n_members"]
    alpha, margin, least = bounds["alpha"], bounds["mia_auc_margin"], bounds["min_members"]
    if stats["auc"] is None:
        why = (
            f"K = {k} reference model(s) cannot estimate how an unseen example scores (K >= 2)"
            if k < 2
            else f"{n} members vs {stats['n_nonmembers']} matched held-out rows"
        )
        return "underpowered", f"underpowered: no LiRA statistic ({why}); it shows nothing"
    m, rate_n = stats["n_nonmembers"], stats["nonmember_flag_rate"]
    numbers = (
        f"LiRA AUC {_f(stats['auc'])} (p {_f(stats['auc_p_value'])}), TPR at 5% FPR "
        f"{_f(stats['tpr_at_5fpr'])}; {stats['flagged']} of {n} members flagged (expected "
        f"{stats['expected']:.1f} at the nominal 5%) vs {stats['nonmember_flagged']} of {m} "
        f"matched held-out rows (p {_f(stats['flagged_p_value'])}); K = {k} references"
    )
    miscalibrated = (
        f"; held-out rows are flagged at {rate_n:.0%}, not 5%: the references do not "
        "calibrate this model's confidence (it was trained or fine-tuned differently), so "
        "only the comparison with held-out rows counts"
        if rate_n > 0.10
        else ""
    )
    gap = stats["flagged"] / n - rate_n
    signal = (stats["auc_p_value"] < alpha and stats["auc"] > 0.5 + margin) or (
        stats["flagged_p_value"] < alpha and gap > margin
    )
    if signal:
        return "signal", (
            f"membership signal: {numbers}. Shows: this model is more confident on the "
            "forgotten rows than on matched rows it never saw, relative to retrains that "
            f"never saw either: it has not forgotten them as a retrain would{miscalibrated}"
        )
    if n < least:
        return "underpowered", (
            f"underpowered: {n} members < gates.min_members {int(least)}; no signal at this "
            f"power ({numbers}). A null result this small is weak evidence of forgetting"
            f"{miscalibrated}"
        )
    return "no signal", (
        f"no membership signal: {numbers}. Shows: the forgotten rows score like matched "
        "held-out rows against retrains without them. Cannot show: that no example is "
        "recognisable to a stronger attacker (more references, online LiRA, patient-level "
        f"tests){miscalibrated}"
    )


def audit_result(plan: AuditPlan, references: list[Reference], seconds: float) -> dict[str, Any]:
    """The audit file's content for ``plan`` and its trained (or cached) references.

    Args:
        plan: the resolved audit.
        references: its reference models, in seed order.
        seconds: wall seconds of the audit so far (planning and training included).

    Returns:
        The JSON-ready result (no raw identifiers: requests by their ids).
    """
    start = time.perf_counter()
    stats = audit_statistics(plan.cohorts, [r.model for r in references], plan.target)
    status, line = verdict(stats, plan.bounds)
    if plan.caveats:
        line += "; " + "; ".join(plan.caveats)
    return {
        "kind": "offline-lira",
        "model": plan.model,
        "version": plan.version,
        "audited_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": plan.record.get("weights_sha256"),
        "requests": plan.request_ids,
        "reason": plan.reason,
        "status": status,
        "verdict": line,
        "caveats": list(plan.caveats),
        "n_references": len(references),
        "seeds": [r.seed for r in references],
        "deployed_seed": plan.deployed_seed,
        "epochs": plan.epochs,
        "recipe_epochs": plan.recipe_epochs,
        "recipe_source": plan.recipe_source,
        "references": [
            {
                "seed": r.seed,
                "cached": r.cached,
                "train_seconds": r.seconds,
                "cpu_seconds": r.cpu_seconds,
                "key": r.key,
            }
            for r in references
        ],
        "trained_now": sum(not r.cached for r in references),
        "from_cache": sum(r.cached for r in references),
        "n_forget_train": plan.cohorts.masks.counts["forget_train"],
        "n_members": stats["n_members"],
        "n_nonmembers": stats["n_nonmembers"],
        "unit": "image",
        "auc": stats["auc"],
        "auc_p_value": stats["auc_p_value"],
        "tpr_at_5fpr": stats["tpr_at_5fpr"],
        "flagged": stats["flagged"],
        "expected": stats["expected"],
        "flagged_p_value": stats["flagged_p_value"],
        "nonmember_flagged": stats["nonmember_flagged"],
        "nonmember_flag_rate": stats["nonmember_flag_rate"],
        "matching": stats["matching"],
        "pool_splits": stats["pool_splits"],
        "pool_check": plan.cohorts.pool_check,
        "bounds": {k: plan.bounds[k] for k in ("alpha", "mia_auc_margin", "min_members")},
        "counts": plan.cohorts.masks.counts,
        "data_fingerprint": plan.data_fingerprint,
        "training_code": plan.bank.code_hash,
        "cache_dir": str(plan.bank.cache_dir),
        "seconds": round(seconds + time.perf_counter() - start, 2),
    }


def audit_path(registry: Registry, name: str, version: str) -> Path:
    """Where a version's audit lives.

    Args:
        registry: the project's registry.
        name: the registered model.
        version: its version.

    Returns:
        ``registry/<model>/<version>/audit.json`` under the registry's root.
    """
    return registry.record_dir(name, version) / AUDIT_FILE


def read_audit(registry: Registry, name: str, version: str) -> dict[str, Any] | None:
    """The version's audit, or None when it has not been audited.

    Args:
        registry: the project's registry.
        name: the registered model.
        version: its version.

    Returns:
        The audit file's content, or None.
    """
    path = audit_path(registry, name, version)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_audit(registry: Registry, result: dict[str, Any]) -> dict[str, Any]:
    """Write the audit next to the record, refresh the card and commit them.

    Write the audit next to the record (atomically; the record is never touched),
    regenerate the card's files to show it, and commit them and the audit (only them) when
    the registry is a git repository outside a DVC stage.

    Args:
        registry: the project's registry.
        result: :func:`audit_result`'s content.

    Returns:
        ``{"path": the audit file relative to the root, "committed": bool, "why_not":
        why it was not committed, or None}``.
    """
    name, version = result["model"], result["version"]
    folder = registry.record_dir(name, version)
    record = registry.record(name, version)
    with registry.lock():
        path = write_json(folder / AUDIT_FILE, result)
        validation, plot_png = report_inputs(registry.files_dir(name, version), record)
        files = card_files(record, registry.history(name, version), result, validation, plot_png)
        paths = [path, *(write_text(folder / n, text) for n, text in files.items())]
    out: dict[str, Any] = {
        "path": path.relative_to(registry.root).as_posix(),
        "committed": False,
        "why_not": None,
    }
    if in_dvc_stage() or not registry.is_repository():
        out["why_not"] = "not a git + DVC repository, or inside a DVC stage"
        return out
    changed = [p for p in paths if _changed(registry.root, p)]
    try:
        if changed:
            registry.commit_files(
                changed,
                f"{name} {version}: per-example audit (offline LiRA, K = "
                f"{result['n_references']}): {result['status']}",
            )
        out["committed"] = True
    except (RuntimeError, RegistryError) as exc:  # the files stay written; say why
        out["why_not"] = str(exc)[:300]
    return out
