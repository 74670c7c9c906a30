"""The deployed model's training augmentation, reused by every method that updates weights.

A model trained on augmented images and then fine-tuned on clean ones drifts: on the
PneumoniaMNIST model one epoch of plain fine-tuning at lr 1e-5 on clean retain images took
test accuracy from 0.910 to 0.835, and the same steps with the training augmentation kept
0.904 (issue 11). So every method (PSG's outer problem, Boundary Shrink/Expand, fine-tune,
l1-sparse, NegGrad+, random-label, SalUn, SCRUB, composition's head fine-tuning) applies the
augmentation the checkpoint records (``CheckpointMeta.augmentation``, set on the model as
``train_augmentation`` when loaded) unless a method's settings say ``augment: false`` or
give their own ``augmentation: {flip, rotate_deg, shift}``. The transform itself is MONAI's
(``medunlearn.data.images.augmentation``), seeded per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.transforms import Compose
from torch import nn

from medunlearn.data.images import LabelledImages, augmentation


def augmentation_spec(
    model: nn.Module, augment: bool = True, spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The augmentation settings a run uses: ``{}`` when off or unknown."""
    if not augment:
        return {}
    if spec is not None:
        return dict(spec)
    return dict(getattr(model, "train_augmentation", None) or {})


def training_transform(
    model: nn.Module,
    image_size: int,
    seed: int,
    augment: bool = True,
    spec: Mapping[str, Any] | None = None,
) -> Compose | None:
    """The seeded transform for a run, or ``None`` when augmentation is off or not recorded."""
    settings = augmentation_spec(model, augment, spec)
    return augmentation(image_size, seed=seed, **settings) if settings else None


def augmented(images: LabelledImages, transform: Compose | None) -> LabelledImages:
    """``images`` seen through ``transform`` (unchanged when ``None``)."""
    return images if transform is None else images.with_augmentation(transform)


def augment_batch(x: torch.Tensor, transform: Compose | None) -> torch.Tensor:
    """Apply ``transform`` image by image to a batch (N, C, H, W) on any device."""
    if transform is None:
        return x
    out = torch.stack([torch.as_tensor(transform(img.cpu())).float() for img in x])
    return out.to(x.device)
