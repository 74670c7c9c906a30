"""Classification metrics for a model on a labelled image set.

scikit-learn computes every number here; this module only decides what to report (overall
and per class, macro AUC over the classes that can be scored) and feeds it batched logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from torch.utils.data import DataLoader, Dataset

from medunlearn.device import autocast


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for every item, in dataset order, in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with autocast(device):
            out = model(images.to(device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(targets)
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


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
