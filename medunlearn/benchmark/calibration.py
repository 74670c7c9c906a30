"""Gate calibration: how often a gate refuses a true retrain, and catches a memorised model.

- **False refusal**: every retrain reference of a scenario (seeds ``reference_seed``,
  ``+1``, ...; trained on retain-train only, so the forgotten images are true non-members)
  is put through the scenario's gate profile with the deployed model as the retention
  baseline, each with its own evidence-sampling seed.
- **Detection**: for each seed, the deployed model trained ``extra_epochs`` more passes
  over the forget cohort, each forget batch paired with a retain batch (Adam at 0.3 x the
  recipe's learning rate, BatchNorm statistics fixed, no augmentation): the cohort is seen
  far more often than its share, as by a model that memorised it, while retention is kept.
  Whether it *measurably* memorised is shown independently by the offline LiRA audit
  (``medunlearn.evidence.audit``) when reference models are given. A detection counts the gate
  failing on a *membership* check (membership test or member accuracy gap), not on
  retention.
- **Single image** (consent scenarios only): the same two rates for consent requests of one
  image (seed s: a random image of the forget cohort, so every retrain reference is still a
  true retrain for it), where the tests are underpowered by design.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medunlearn.data.batches import endless_batches, iterate_batches
from medunlearn.data.images import LabelledImages
from medunlearn.data.request import Cohorts, ForgetRequest, build_cohorts
from medunlearn.evidence.gates import evaluate_gates
from medunlearn.evidence.metrics import unlearning_metrics

PRIVACY_CHECKS = ("membership", "member_accuracy_gap")

RowStore = Callable[[str, int, Callable[[], dict]], dict]
"""``store(kind, seed, compute)``: the stored row of that kind and seed, else ``compute()``
(stored before it is returned)."""


def memorise(
    model: torch.nn.Module,
    images: LabelledImages,
    retain: LabelledImages | None = None,
    epochs: int = 30,
    lr: float = 3e-4,
    batch_size: int = 32,
    seed: int = 0,
) -> torch.nn.Module:
    """A copy of ``model`` made to memorise ``images`` (the detection side of calibration).

    Trained ``epochs`` more passes over ``images`` with Adam and cross-entropy, each batch
    paired with a batch of ``retain`` (when given); the model stays in eval mode, so
    BatchNorm statistics and dropout stay fixed and only weights change.

    Args:
        model: the model to copy (not changed).
        images: the images to memorise (the forget cohort).
        retain: images whose batches are added to each step's loss to keep retention;
            None or empty: none.
        epochs: passes over ``images``.
        lr: Adam's learning rate.
        batch_size: images per batch (each of ``images`` and ``retain``).
        seed: the shuffling generator's seed.

    Returns:
        The trained copy, in eval mode.
    """
    model = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)

    stream = (
        endless_batches(retain, batch_size, generator=generator)
        if retain is not None and len(retain)
        else None
    )
    for _ in range(epochs):
        for x, y in iterate_batches(images, batch_size, shuffle=True, generator=generator):
            model.eval()  # BatchNorm statistics stay; only weights memorise
            loss = F.cross_entropy(model(x), y)
            if stream is not None:
                xr, yr = next(stream)
                loss = loss + F.cross_entropy(model(xr), yr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def _row(
    kind: str,
    seed: int,
    reason: str,
    after: Any,
    before: Any,
    section: dict,
    lira: dict | None = None,
) -> dict:
    gate = evaluate_gates(reason, after, before, section)
    m = after.membership
    return {
        "lira_auc": (lira or {}).get("auc"),
        "kind": kind,
        "seed": seed,
        "passed": gate.passed,
        "failed": gate.failed(),
        "privacy_failed": [c for c in gate.failed() if c in PRIVACY_CHECKS],
        "auc": m.get("auc"),
        "p_value": m.get("p_value"),
        "acc_gap": m.get("acc_gap"),
        "n_members": m.get("n_members"),
        "n_nonmembers": m.get("n_nonmembers"),
        "underpowered": any(c.underpowered for c in gate.checks if c.name in PRIVACY_CHECKS),
        "retention": {
            c.name: {"drop": c.value, "status": c.status, "detail": c.detail}
            for c in gate.checks
            if c.name in ("retain_drop", "retain_balanced_drop")
        },
    }


def _rates(rows: Sequence[dict], kind: str) -> dict[str, Any]:
    sel = [r for r in rows if r["kind"] == kind]
    if not sel:
        return {"n": 0}
    return {
        "n": len(sel),
        "passed": sum(r["passed"] for r in sel),
        "refused": sum(not r["passed"] for r in sel),
        "privacy_refused": sum(bool(r["privacy_failed"]) for r in sel),
        "median_auc": _median([r["auc"] for r in sel]),
        "median_lira_auc": _median([r.get("lira_auc") for r in sel]),
        "underpowered": sum(r["underpowered"] for r in sel),
    }


def _median(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return float(np.median(xs)) if xs else None


def calibrate_gates(
    cohorts: Cohorts,
    deployed: torch.nn.Module,
    references: Sequence[torch.nn.Module],
    gates_section: dict[str, Any],
    seeds: int = 20,
    extra_epochs: int = 30,
    lr: float = 3e-4,
    single_images: bool = True,
    log: Callable[[str], None] = print,
    audit: Callable[[torch.nn.Module], dict] | None = None,
    store: RowStore | None = None,
) -> dict[str, Any]:
    """False-refusal and detection rates of the request's gate profile (module docstring).

    Args:
        cohorts: the scenario's cohorts (its request gives the gate profile's reason).
        deployed: the deployed model: the retention baseline, and what is memorised.
        references: retrains without the forget cohort (the main reference first); up to
            ``seeds`` of them are used.
        gates_section: the params file's ``gates`` section.
        seeds: memorised models made (seeds ``0 .. seeds - 1``), and the most references
            and single images used.
        extra_epochs: the memorised models' extra passes (:func:`memorise`).
        lr: their Adam learning rate.
        single_images: add the one-image consent rows (consent requests of more than one
            image only).
        log: receives a one-line summary.
        audit: model -> offline LiRA result (its ``auc`` is kept); adds the per-example
            audit of each full-cohort model. Default: none.
        store: ``store(kind, seed, compute)`` returns a row, computing it only when it is
            not already stored (a 20-seed calibration is tens of minutes of CPU, and an
            interrupted one resumes). Default: always compute.

    Returns:
        ``reason``, ``gates`` (the section), ``extra_epochs``, ``memorise_lr``, ``summary``
        (per kind: ``n``, ``passed``, ``refused``, ``privacy_refused``, ``median_auc``,
        ``median_lira_auc``, ``underpowered``; ``{"n": 0}`` for a kind without rows) and
        ``rows`` (one per model and seed, with its gate outcome and membership evidence).
    """
    audit = audit or (lambda _model: {})
    store = store or (lambda _kind, _seed, compute: compute())
    reason = cohorts.request.reason
    before = unlearning_metrics(deployed, cohorts)
    rows = [
        store(
            "deployed",
            0,
            lambda: _row("deployed", 0, reason, before, before, gates_section, audit(deployed)),
        )
    ]
    refs = list(references)[:seeds]

    def retrain_row(i: int, ref: torch.nn.Module) -> dict:
        after = unlearning_metrics(ref, cohorts, seed=i)
        return _row("retrain", i, reason, after, before, gates_section, audit(ref))

    def memorised_row(s: int) -> dict:
        mem = memorise(
            deployed, cohorts.forget_train, cohorts.retain_train, extra_epochs, lr, seed=s
        )
        after = unlearning_metrics(mem, cohorts, seed=s)
        return _row("memorised", s, reason, after, before, gates_section, audit(mem))

    for i, ref in enumerate(refs):
        rows.append(store("retrain", i, lambda i=i, ref=ref: retrain_row(i, ref)))
    for s in range(seeds):
        rows.append(store("memorised", s, lambda s=s: memorised_row(s)))
    # One forgotten image of the cohort is a valid consent request only when the cohort is a
    # random sample of patients: a class or device cohort's retrains never saw its kind.
    if single_images and reason == "consent_withdrawal" and len(cohorts.forget_train) > 1:
        rows += _single_image_rows(
            cohorts, deployed, refs, gates_section, seeds, extra_epochs, lr, store
        )
    log(
        f"gate calibration ({reason}): retrain refused {_rates(rows, 'retrain').get('refused')}/"
        f"{len(refs)}, memorised caught {_rates(rows, 'memorised').get('privacy_refused')}/{seeds}"
    )
    return {
        "reason": reason,
        "gates": gates_section,
        "extra_epochs": extra_epochs,
        "memorise_lr": lr,
        "summary": {
            kind: _rates(rows, kind)
            for kind in ("deployed", "retrain", "memorised", "single_retrain", "single_memorised")
        },
        "rows": rows,
    }


def _single_image_rows(
    cohorts: Cohorts,
    deployed: torch.nn.Module,
    refs: Sequence[torch.nn.Module],
    gates_section: dict[str, Any],
    seeds: int,
    extra_epochs: int,
    lr: float,
    store: RowStore,
) -> list[dict]:
    """Consent requests of one forgotten image each (the s-th image of the forget cohort)."""
    ids = cohorts.forget_train.rows["image_id"].astype(str).tolist()
    rng = np.random.default_rng(0)
    picks = rng.choice(len(ids), size=min(seeds, len(ids)), replace=False)
    rows = []
    for s, index in enumerate(picks):
        request = ForgetRequest("consent_withdrawal", {"image_ids": [ids[index]]})
        single = replace(
            build_cohorts(
                cohorts.manifest,
                cohorts.train,
                cohorts.val,
                cohorts.test,
                cohorts.class_names,
                request,
            ),
            pool_splits=cohorts.pool_splits,  # the pool the scenario's check chose
            pool_check=cohorts.pool_check,
        )
        ref = refs[s % len(refs)]

        def retrain_row(s: int = s, single: Cohorts = single, ref: torch.nn.Module = ref) -> dict:
            before = unlearning_metrics(deployed, single, seed=s)
            after = unlearning_metrics(ref, single, seed=s)
            return _row("single_retrain", s, "consent_withdrawal", after, before, gates_section)

        def memorised_row(s: int = s, single: Cohorts = single) -> dict:
            before = unlearning_metrics(deployed, single, seed=s)
            mem = memorise(
                deployed, single.forget_train, cohorts.retain_train, extra_epochs, lr, seed=s
            )
            after = unlearning_metrics(mem, single, seed=s)
            return _row("single_memorised", s, "consent_withdrawal", after, before, gates_section)

        rows.append(store("single_retrain", s, retrain_row))
        rows.append(store("single_memorised", s, memorised_row))
    return rows
