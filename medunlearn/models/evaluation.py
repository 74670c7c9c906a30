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
    """Compute accuracy, balanced accuracy, macro one-vs-rest AUC and per-class accuracy.

    scikit-learn computes each number (``accuracy_score``, ``balanced_accuracy_score``,
    ``roc_auc_score``). AUC is averaged over the classes present in ``labels`` with at least
    one negative; it is ``None`` when no class can be scored (e.g. an evaluation set of one
    class). Per-class accuracy is recall: the share of a class's rows predicted as it.

    Args:
        labels: true class indices (N,).
        probs: class probabilities (N, K), K = ``len(class_names)``; the prediction is the
            arg-max.
        class_names: the classes, in column order.

    Returns:
        ``n``; ``accuracy``, ``balanced_accuracy`` and ``macro_auc`` in [0, 1] (the last
        possibly ``None``); ``per_class``: ``{name: {"n", "accuracy" (None without rows)}}``.

    Raises:
        ValueError: an empty set.
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
    """Compute :func:`classification_metrics` of ``model`` on ``dataset`` (eval mode, softmax).

    Args:
        model: the classifier; its training mode is restored afterwards.
        dataset: (image, label) pairs.
        class_names: the classes, in output order.
        batch_size: images per forward pass (default: :func:`inference_batch_size`).
        device: where to compute (default: the model's device).

    Returns:
        The metrics dict of :func:`classification_metrics`.

    Raises:
        ValueError: an empty dataset.
    """
    logits, labels = predict_logits(model, dataset, batch_size, device)
    return classification_metrics(labels, torch.softmax(logits, dim=1), class_names)
