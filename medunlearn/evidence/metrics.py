"""Unlearning metrics of a model on its cohorts, and the Avg Gap to the retrain reference.

UA, RA, TA (forget-train, retain-train and retain-test accuracy), membership, and the Avg
Gap to the retrain reference, in percentage points. The plain classification numbers come
from :mod:`medunlearn.models.evaluation` (scikit-learn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from medunlearn.evidence.membership import (
    heldout_reference,
    measure_membership,
    mia_efficacy,
    shadow_sets,
)
from medunlearn.models.evaluation import classification_metrics
from medunlearn.models.inference import LogitCache, predict_logits


def accuracy_on(
    model: torch.nn.Module, dataset: Dataset, predict: LogitCache | None = None
) -> float | None:
    """Compute the top-1 accuracy of ``model`` on a cohort.

    Args:
        model: the classifier (used only without ``predict``).
        dataset: (image, label) pairs.
        predict: a :class:`LogitCache` of ``model`` to share forward passes, or ``None``.

    Returns:
        The share of rows whose arg-max logit is the label, in [0, 1]; ``None`` on an empty
        cohort.
    """
    logits, labels = predict(dataset) if predict is not None else predict_logits(model, dataset)
    if len(labels) == 0:
        return None
    return float((logits.argmax(1) == labels).float().mean())


# Avg Gap (SalUn, Fan et al. ICLR 2024, Table 1): UA, RA, TA and MIA-efficacy, i.e. forget-train
# accuracy, retain-train accuracy, retain-test accuracy and MIA-efficacy.
GAP_KEYS = ("forget_train_acc", "retain_train_acc", "retain_test_acc", "mia_efficacy")
# The benchmark's tuning signal on validation rows: the same accuracies and the rank-AUC
# membership attack against matched held-out rows (medunlearn.evidence.membership).
TUNING_GAP_KEYS = ("forget_train_acc", "retain_train_acc", "retain_test_acc", "mia_auc")


@dataclass
class UnlearnMetrics:
    """Metrics of one model on one request's cohorts; serialises to JSON.

    Accuracies are in [0, 1]. ``retain_test_*`` are measured on the test split's retained
    rows (the benchmark's TA); ``retain_heldout_*`` on every retained held-out row of the
    pool (val and test in a revision), which the gates use. ``membership`` is
    :class:`medunlearn.evidence.membership.MembershipEvidence` as a dict (forget-train vs
    matched held-out rows). With a retrain reference
    (:meth:`with_reference`), ``gaps`` and ``avg_gap`` are absolute differences in
    **percentage points** over ``GAP_KEYS`` (SalUn's Avg Gap), and ``tuning_gaps`` /
    ``tuning_gap`` the same over ``TUNING_GAP_KEYS``.
    """

    request_hash: str
    forget_train_acc: float | None
    forget_test_acc: float | None  # test rows the selector matches (may be none)
    forget_heldout_acc: float | None  # held-out rows (pool splits) the selector matches
    retain_train_acc: float | None
    retain_test_acc: float | None
    retain_test_balanced_acc: float | None
    retain_test_recall: dict[str, float | None]  # per class, on retain-test
    retain_heldout_acc: float | None  # retained held-out rows of the pool (gates' retention)
    retain_heldout_balanced_acc: float | None
    retain_heldout_recall: dict[str, float | None]
    test_acc: float | None
    test_balanced_acc: float | None
    per_class_test_acc: dict[str, float | None]
    membership: dict[str, Any]
    mia_efficacy: float | None
    gaps: dict[str, float] = field(default_factory=dict)
    avg_gap: float | None = None
    tuning_gaps: dict[str, float] = field(default_factory=dict)
    tuning_gap: float | None = None
    n_forget_train: int | None = None  # images behind forget_train_acc
    # Per-image outcomes on the retained held-out rows, in a fixed row order: ``label``,
    # ``correct`` (0/1) and ``rows`` (a fingerprint of the image ids in that order). The
    # retention gates pair them with the deployed model's (McNemar); in memory only, never
    # serialised (a revision's JSON stays small).
    retain_heldout_outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def mia_auc(self) -> float | None:
        """The membership attack's rank AUC, forget-train vs matched held-out rows (or ``None``)."""
        return self.membership.get("auc")

    def to_dict(self) -> dict[str, Any]:
        """Return the metrics as a JSON-ready dict, without the per-image retention outcomes.

        Returns:
            Every field but ``retain_heldout_outcomes``.
        """
        out = asdict(self)
        out.pop("retain_heldout_outcomes")
        return out

    def with_reference(self, retrain: UnlearnMetrics) -> UnlearnMetrics:
        """Set the gaps (percentage points) to a retrain reference measured on the same cohorts.

        ``gaps[k] = 100 * |self.k - retrain.k|`` for each of ``GAP_KEYS`` both have (SalUn's Avg
        Gap, Fan et al. ICLR 2024); ``avg_gap`` their mean; ``tuning_gaps``/``tuning_gap`` the
        same over ``TUNING_GAP_KEYS``. Modifies this object.

        Args:
            retrain: the retrain reference's metrics.

        Returns:
            This object, with the gaps set; ``avg_gap``/``tuning_gap`` are ``None`` when no
            key could be compared.
        """
        self.gaps = _gaps(self, retrain, GAP_KEYS)
        self.avg_gap = float(np.mean(list(self.gaps.values()))) if self.gaps else None
        self.tuning_gaps = _gaps(self, retrain, TUNING_GAP_KEYS)
        self.tuning_gap = (
            float(np.mean(list(self.tuning_gaps.values()))) if self.tuning_gaps else None
        )
        return self


def _gaps(mine: UnlearnMetrics, ref: UnlearnMetrics, keys: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key in keys:
        a, b = getattr(mine, key), getattr(ref, key)
        if a is not None and b is not None:
            out[key] = 100.0 * abs(a - b)
    return out


def _concat_mask(cohorts: Any, forget: bool) -> Any:
    """Held-out rows of the pool splits the selector matches (``forget``) as one dataset."""
    parts = []
    for name in cohorts.pool_splits:
        images = getattr(cohorts, f"{'forget' if forget else 'retain'}_{name}", None)
        if images is not None and len(images):
            parts.append(images)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def evidence_sets(cohorts: Any, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Build the membership evidence's row sets of ``cohorts``, once per cohorts object and seed.

    Matched sampling is the slow part, so the sets are memoised on ``cohorts`` itself.

    Args:
        cohorts: a request's ``medunlearn.data.request.Cohorts``.
        seed: seed of the matched draws.

    Returns:
        ``(held-out reference, shadow sets, forget held-out rows, retain held-out rows)``:
        a :class:`~medunlearn.evidence.membership.HeldoutReference`, a ``ShadowSets`` or
        ``None``, and datasets of the pool splits' forget/retain rows (``None`` when empty).
    """
    memo = cohorts.__dict__.setdefault("_evidence_sets", {})
    if seed not in memo:
        memo[seed] = (
            heldout_reference(cohorts, seed),
            shadow_sets(cohorts, seed),
            _concat_mask(cohorts, forget=True),
            _concat_mask(cohorts, forget=False),
        )
    return memo[seed]


def unlearning_metrics(
    model: torch.nn.Module, cohorts: Any, seed: int = 0, predict: LogitCache | None = None
) -> UnlearnMetrics:
    """Compute every metric of ``model`` on a request's cohorts.

    Membership evidence compares forget-train with held-out rows matched on label, device and
    site (``medunlearn.evidence.membership``). Retention is measured both on retain-test (the
    benchmark's TA) and on every retained held-out row of the pool (what the gates use; its
    per-image outcomes are kept for the paired tests).

    Args:
        model: the model to measure.
        cohorts: the request's ``medunlearn.data.request.Cohorts``.
        seed: seed of the matched draws, bootstrap and permutations.
        predict: a :class:`LogitCache` of ``model`` to share forward passes across calls.

    Returns:
        The metrics; accuracies in [0, 1], gaps unset (see
        :meth:`UnlearnMetrics.with_reference`).

    Raises:
        ValueError: the test split is empty, or no member can be matched.
    """
    predict = predict or LogitCache(model)
    reference, shadow, forget_heldout, retain_heldout = evidence_sets(cohorts, seed)
    logits, labels = predict(cohorts.test)
    test = classification_metrics(labels, torch.softmax(logits, dim=1), cohorts.class_names)

    outcomes: dict[str, np.ndarray] = {}

    def report(images: Any, keep: bool = False) -> dict[str, Any] | None:
        if images is None or len(images) == 0:
            return None
        r_logits, r_labels = predict(images)
        probs = torch.softmax(r_logits, dim=1)
        if keep:  # the same argmax as classification_metrics, so outcomes match the drop
            outcomes["label"] = r_labels.numpy().astype(np.int64)
            outcomes["correct"] = (probs.argmax(1) == r_labels).numpy().astype(np.int8)
            outcomes["rows"] = _row_fingerprint(images)
        return classification_metrics(r_labels, probs, cohorts.class_names)

    retain, pooled = report(cohorts.retain_test), report(retain_heldout, keep=True)
    return UnlearnMetrics(
        request_hash=cohorts.request.hash,
        forget_train_acc=accuracy_on(model, cohorts.forget_train, predict),
        n_forget_train=len(cohorts.forget_train),
        forget_test_acc=accuracy_on(model, cohorts.forget_test, predict),
        forget_heldout_acc=(
            accuracy_on(model, forget_heldout, predict) if forget_heldout is not None else None
        ),
        retain_train_acc=accuracy_on(model, cohorts.retain_train, predict),
        retain_test_acc=retain["accuracy"] if retain else None,
        retain_test_balanced_acc=_balanced(retain),
        retain_test_recall=_recall(retain),
        retain_heldout_acc=pooled["accuracy"] if pooled else None,
        retain_heldout_balanced_acc=_balanced(pooled),
        retain_heldout_recall=_recall(pooled),
        test_acc=test["accuracy"],
        test_balanced_acc=test["balanced_accuracy"],
        per_class_test_acc={k: v["accuracy"] for k, v in test["per_class"].items()},
        membership=measure_membership(model, reference, seed, predict).to_dict(),
        mia_efficacy=mia_efficacy(model, shadow, cohorts.forget_train, predict),
        retain_heldout_outcomes=outcomes,
    )


def _row_fingerprint(images: Any) -> str:
    """Return the SHA-256 (hex) of the image ids in order.

    The retention test pairs two models' outcomes row by row; equal labels in another order
    must not pass as the same rows.
    """
    import hashlib

    parts = getattr(images, "datasets", [images])
    ids = [str(i) for part in parts for i in getattr(part, "rows", {}).get("image_id", [])]
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _recall(report: dict[str, Any] | None) -> dict[str, float | None]:
    """Recall of each class present in the set (per-class accuracy)."""
    if report is None:
        return {}
    return {k: v["accuracy"] for k, v in report["per_class"].items() if v["n"]}


def _balanced(report: dict[str, Any] | None) -> float | None:
    """Balanced accuracy over the classes present (sklearn's, which ignores absent ones)."""
    return None if report is None else report["balanced_accuracy"]
