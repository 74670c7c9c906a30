"""Classification metrics for a model on a labelled image set.

scikit-learn computes every number here; this module only decides what to report (overall
and per class, macro AUC over the classes that can be scored) and feeds it batched logits.
Used to choose a training epoch and to report a model; the unlearning evidence built on it
(UA/RA/TA, Avg Gap) is :mod:`medunlearn.evidence.metrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from torch.utils.data import Dataset

from medunlearn.models.inference import predict_logits


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
    with warnings.catch_warnings():  # a retired class predicted on retain rows is an error,
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")  # as wanted
        balanced = float(balanced_accuracy_score(y, pred))
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": balanced,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
    }


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    class_names: Sequence[str],
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """:func:`classification_metrics` of ``model`` on ``dataset``."""
    logits, labels = predict_logits(model, dataset, batch_size, device)
    return classification_metrics(labels, torch.softmax(logits, dim=1), class_names)
