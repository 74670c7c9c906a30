"""Batched, eval-mode inference: the one place logits are computed for metrics and attacks."""

from __future__ import annotations

import torch
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


class LogitCache:
    """``predict_logits`` of one model, computed once per dataset object.

    Metrics and attacks ask for the same cohorts several times (accuracy, MIA, shadow model);
    with the cache each cohort costs one forward pass. The model must not change while the
    cache is in use.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._memo: dict[int, tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]] = {}

    def __call__(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(dataset)
        if key not in self._memo:  # the dataset is kept alive so its id cannot be reused
            self._memo[key] = (dataset, predict_logits(self.model, dataset))
        return self._memo[key][1]
