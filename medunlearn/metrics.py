"""Classification metrics for a model on a labelled image set.

scikit-learn computes every number here; this module only decides what to report (overall
and per class, macro AUC over the classes that can be scored) and feeds it batched logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from torch.utils.data import Dataset

from medunlearn.inference import LogitCache, predict_logits


def classification_metrics(
    labels: np.ndarray | torch.Tensor, probs: np.ndarray | torch.Tensor, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC and per-class accuracy (recall).

    AUC is averaged over the classes present in ``labels`` with at least one negative; it is
    ``None`` when no class can be scored (e.g. an evaluation set of one class).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("cannot compute metrics on an empty set")
    pred = p.argmax(axis=1)
    aucs = []
    for k in range(len(class_names)):
        positives = y == k
        if 0 < positives.sum() < len(y):
            aucs.append(roc_auc_score(positives, p[:, k]))
    per_class = {}
    for k, name in enumerate(class_names):
        mask = y == k
        per_class[str(name)] = {
            "n": int(mask.sum()),
            "accuracy": float((pred[mask] == k).mean()) if mask.any() else None,
        }
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
    }


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    class_names: Sequence[str],
    batch_size: int = 256,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """:func:`classification_metrics` of ``model`` on ``dataset``."""
    logits, labels = predict_logits(model, dataset, batch_size, device)
    return classification_metrics(labels, torch.softmax(logits, dim=1), class_names)


def accuracy_on(
    model: torch.nn.Module, dataset: Dataset, predict: LogitCache | None = None
) -> float | None:
    """Top-1 accuracy, ``None`` on an empty cohort."""
    logits, labels = predict(dataset) if predict is not None else predict_logits(model, dataset)
    if len(labels) == 0:
        return None
    return float((logits.argmax(1) == labels).float().mean())


GAP_KEYS = ("forget_train_acc", "retain_train_acc", "retain_test_acc", "mia_efficacy")


@dataclass
class UnlearnMetrics:
    """Metrics of one model on one request's cohorts; serialises to JSON.

    Avg Gap (with a retrain reference) is the mean absolute difference, in points of [0, 1],
    over ``GAP_KEYS``: forget accuracy (forget-train), retain accuracy (retain-train), test
    accuracy on the retained data (retain-test), and MIA-efficacy; the SalUn protocol.
    """

    request_hash: str
    forget_train_acc: float | None
    forget_test_acc: float | None
    retain_train_acc: float | None
    retain_test_acc: float | None
    test_acc: float | None
    per_class_test_acc: dict[str, float | None]
    mia_loss: dict[str, Any]
    mia_efficacy: float | None
    gaps: dict[str, float] = field(default_factory=dict)
    avg_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_reference(self, retrain: UnlearnMetrics) -> UnlearnMetrics:
        """Gaps to a retrain reference measured on the same cohorts."""
        gaps = {}
        for key in GAP_KEYS:
            mine, ref = getattr(self, key), getattr(retrain, key)
            if mine is not None and ref is not None:
                gaps[key] = abs(mine - ref)
        self.gaps = gaps
        self.avg_gap = float(np.mean(list(gaps.values()))) if gaps else None
        return self


def unlearning_metrics(
    model: torch.nn.Module, cohorts: Any, seed: int = 0, predict: LogitCache | None = None
) -> UnlearnMetrics:
    """Every metric of ``model`` on a request's cohorts (``medunlearn.unlearn.request.Cohorts``).

    The loss-threshold MIA compares forget-train with forget-test; when the selector matches
    no held-out rows (e.g. explicit patient ids, who live in one split), it falls back to
    retain-test and says so in ``mia_loss["nonmembers"]``. ``predict`` (a
    :class:`LogitCache` of ``model``) lets callers share forward passes across calls.
    """
    from medunlearn.mia import loss_threshold_attack, svc_mia_efficacy

    nonmembers, source = cohorts.forget_test, "forget_test"
    if len(nonmembers) < 2:
        nonmembers, source = cohorts.retain_test, "retain_test"
    predict = predict or LogitCache(model)
    attack = loss_threshold_attack(
        model, cohorts.forget_train, nonmembers, seed=seed, predict=predict
    )
    logits, labels = predict(cohorts.test)
    test = classification_metrics(labels, torch.softmax(logits, dim=1), cohorts.class_names)
    return UnlearnMetrics(
        request_hash=cohorts.request.hash,
        forget_train_acc=accuracy_on(model, cohorts.forget_train, predict),
        forget_test_acc=accuracy_on(model, cohorts.forget_test, predict),
        retain_train_acc=accuracy_on(model, cohorts.retain_train, predict),
        retain_test_acc=accuracy_on(model, cohorts.retain_test, predict),
        test_acc=test["accuracy"],
        per_class_test_acc={k: v["accuracy"] for k, v in test["per_class"].items()},
        mia_loss={**asdict(attack), "nonmembers": source},
        mia_efficacy=svc_mia_efficacy(
            model, cohorts.retain_train, cohorts.test, cohorts.forget_train, seed, predict
        ),
    )
