"""Batched, eval-mode inference: the one place logits are computed for metrics and attacks."""

from __future__ import annotations

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from medunlearn.data.batches import iterate_batches
from medunlearn.data.images import LabelledImages
from medunlearn.models.device import autocast

# On a CPU, a forward pass is fastest when one batch's activations stay in cache: measured
# on 2 cores (allcnn width 0.5, 2026-12-01), 440 HAM10000 images at 64 px took 5.0 s in
# batches of 256 and 2.8 s in batches of 8; 1,150 demo digits at 28 px 0.78 s vs 0.52 s in
# batches of 41. So CPU batches hold about this many pixels; GPUs keep large batches.
CPU_BATCH_PIXELS = 32_768
GPU_BATCH_SIZE = 256


def inference_batch_size(dataset: Dataset, device: torch.device) -> int:
    """Choose images per forward pass for ``dataset`` on ``device``.

    ``GPU_BATCH_SIZE`` (256) on an accelerator or for an empty dataset; on a CPU as many
    (H, W) images as fit ``CPU_BATCH_PIXELS`` (32,768 pixels), 1 to 256 (measured: one
    batch's activations staying in cache is fastest).

    Args:
        dataset: the images (the first one's shape is read).
        device: where the forward passes run.

    Returns:
        The batch size.
    """
    if device.type != "cpu" or len(dataset) == 0:
        return GPU_BATCH_SIZE
    if isinstance(dataset, LabelledImages) and dataset.images is not None:
        image = dataset.images[0]  # the shape of the decoded tensor, no per-image fetch
    else:
        image = dataset.image(0) if hasattr(dataset, "image") else dataset[0][0]
    pixels = int(image.shape[-1]) * int(image.shape[-2]) if image.ndim >= 2 else 1
    return max(1, min(GPU_BATCH_SIZE, CPU_BATCH_PIXELS // max(1, pixels)))


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute logits and labels for every item, in dataset order, in eval mode.

    The model's training mode is restored afterwards; bf16 autocast applies on CUDA.

    Args:
        model: the classifier.
        dataset: (image, label) pairs; a ``LabelledImages`` is batched without a
            ``DataLoader``.
        batch_size: images per forward pass; defaults to :func:`inference_batch_size` (eval
            mode: the result does not depend on it beyond float rounding).
        device: where to compute (default: the model's device).

    Returns:
        ``(logits, labels)``: float32 (N, K) and int64 (N,), on the CPU; (0, 0) and (0,)
        for an empty dataset.
    """
    device = device or next(model.parameters()).device
    batch_size = batch_size or inference_batch_size(dataset, device)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    batches = (
        iterate_batches(dataset, batch_size)
        if isinstance(dataset, LabelledImages)
        else DataLoader(dataset, batch_size=batch_size, shuffle=False)
    )
    for images, targets in batches:
        with autocast(device):
            out = model(images.to(device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(targets)
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


class LogitCache:
    """Memoise ``predict_logits`` of one model, computed once per split.

    Metrics and attacks ask for many overlapping cohorts (forget/retain, matched held-out
    rows, shadow sets), all cut from the train, val and test splits. A cohort that knows
    where it was cut from (``LabelledImages.root``/``root_index``, also inside a
    ``ConcatDataset``) is served by indexing its split's logits, so each split costs one
    forward pass per model; anything else is computed once per dataset object. The model
    must not change while the cache is in use.

    Args:
        model: the classifier whose logits are cached.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._memo: dict[int, tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]] = {}

    def _whole(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(dataset)
        if key not in self._memo:  # the dataset is kept alive so its id cannot be reused
            self._memo[key] = (dataset, predict_logits(self.model, dataset))
        return self._memo[key][1]

    def __call__(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the logits and labels of ``dataset``, computing its split's at most once.

        Args:
            dataset: a set, a subset of one (``root``/``root_index``) or a ``ConcatDataset``
                of such.

        Returns:
            ``(logits, labels)``: float32 (N, K) and int64 (N,) on the CPU, in dataset order.
        """
        if isinstance(dataset, ConcatDataset):
            parts = [self(d) for d in dataset.datasets]
            if parts and all(len(lab) for _, lab in parts):
                return torch.cat([lg for lg, _ in parts]), torch.cat([lab for _, lab in parts])
            return self._whole(dataset)
        root = getattr(dataset, "root", None)
        if root is not None and root is not dataset:
            logits, labels = self._whole(root)
            index = torch.as_tensor(dataset.root_index, dtype=torch.long)
            if len(index) == 0:
                return torch.empty(0, logits.shape[1] if logits.ndim == 2 else 0), labels[:0]
            return logits[index], labels[index]
        return self._whole(dataset)
