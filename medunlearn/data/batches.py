"""Mini-batches of a :class:`~medunlearn.data.images.LabelledImages`, without per-image Python.

For images held in memory, ``torch.utils.data.DataLoader`` would fetch the dataset image by
image and stack the results (a Python call per image, then a copy); here one
``index_select`` cuts each batch from the decoded (N, C, H, W) tensor. The shuffled order
of a pass is ``torch.randperm(n, generator=generator)``: every image once per pass, seeded.
Streamed datasets (decoded from files on access) still go through a ``DataLoader`` in that
order: reading a file is per image by nature. The optional augmentation
(:class:`~medunlearn.data.augment.BatchAugmentation`) is applied to the whole batch on the
target device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from medunlearn.data.images import LabelledImages

Batch = tuple[torch.Tensor, torch.Tensor]


def iterate_batches(
    images: LabelledImages,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[Batch]:
    """Make one pass over ``images`` in batches.

    Args:
        images: the dataset (in memory or streamed).
        batch_size: images per batch (the last may be smaller unless ``drop_last``).
        shuffle: draw a random order from ``generator`` (required when shuffling).
        generator: the run's seeded CPU generator.
        drop_last: skip a last batch smaller than ``batch_size``.
        device: where batches go (default: stay on the CPU).
        augment: applied to each image batch after it reached ``device``.

    Yields:
        ``(x, y)``: images (B, C, H, W) float32 in [0, 1] and labels (B,) int64 class
        indices, on ``device``. Nothing for an empty dataset.

    Raises:
        ValueError: ``batch_size`` < 1, or ``shuffle`` without a generator (raised on the
            first ``next``, as for any generator).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if shuffle and generator is None:
        raise ValueError("shuffled batches need the run's seeded generator")
    n = len(images)
    if n == 0:
        return
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    if images.in_memory:
        assert images.images is not None
        chunks = (order[i : i + batch_size] for i in range(0, stop, batch_size))
        pairs = ((images.images.index_select(0, idx), images.labels[idx]) for idx in chunks)
    else:
        pairs = iter(
            DataLoader(
                images, batch_size=batch_size, sampler=order[:stop].tolist(), drop_last=False
            )
        )
    for x, y in pairs:
        if device is not None:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
        yield (augment(x) if augment is not None else x), y


def endless_batches(
    images: LabelledImages,
    batch_size: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[Batch]:
    """Yield shuffled passes over ``images`` forever (a retain stream paired with forget batches).

    Args:
        images: the dataset (in memory or streamed); must not be empty.
        batch_size: images per batch (each pass's last batch may be smaller).
        generator: the run's seeded CPU generator (each pass draws a new order).
        device: where batches go (default: stay on the CPU).
        augment: applied to each image batch after it reached ``device``.

    Yields:
        ``(x, y)``: images (B, C, H, W) float32 in [0, 1] and labels (B,) int64.

    Raises:
        ValueError: ``images`` is empty (the stream would never yield), on the first
            ``next``.
    """
    if len(images) == 0:
        raise ValueError("an endless stream of batches needs a non-empty dataset")
    while True:
        yield from iterate_batches(
            images, batch_size, shuffle=True, generator=generator, device=device, augment=augment
        )
