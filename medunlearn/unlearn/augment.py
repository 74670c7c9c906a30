"""The deployed model's training augmentation, reused by every method that updates weights.

A model trained on augmented images and then fine-tuned on clean ones drifts: on the
PneumoniaMNIST model one epoch of plain fine-tuning at lr 1e-5 on clean retain images took
test accuracy from 0.910 to 0.835, and the same steps with the training augmentation kept
0.904 (issue 11). So every method (PSG's outer problem, Boundary Shrink/Expand, fine-tune,
l1-sparse, NegGrad+, random-label, SalUn, SCRUB, composition's head fine-tuning) applies the
augmentation the checkpoint records (``CheckpointMeta.augmentation``, set on the model as
``train_augmentation`` when loaded) unless a method's settings say ``augment: false`` or
give their own ``augmentation: {flip, rotate_deg, shift}``. The transform is batched and
seeded per run (:class:`medunlearn.data.augment.BatchAugmentation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from medunlearn.data.augment import BatchAugmentation


def augmentation_spec(
    model: nn.Module, augment: bool = True, spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the augmentation settings a run uses.

    Args:
        model: the deployed model (its ``train_augmentation`` attribute, set when loaded from
            a checkpoint).
        augment: use an augmentation at all (a method's ``augment`` setting).
        spec: the method's own ``{flip, rotate_deg, shift}``, replacing the recorded one.

    Returns:
        A copy of the settings; ``{}`` when off or not recorded.
    """
    if not augment:
        return {}
    if spec is not None:
        return dict(spec)
    return dict(getattr(model, "train_augmentation", None) or {})


def training_transform(
    model: nn.Module,
    seed: int,
    augment: bool = True,
    spec: Mapping[str, Any] | None = None,
) -> BatchAugmentation | None:
    """Build the run's seeded batch augmentation.

    Args:
        model: the deployed model (its recorded ``train_augmentation``).
        seed: seed of the augmentation's generator.
        augment: use an augmentation at all.
        spec: the method's own settings, replacing the recorded ones.

    Returns:
        The augmentation, or ``None`` when off or not recorded.

    Raises:
        ValueError: an unknown augmentation key or an out-of-range value (named).
    """
    return BatchAugmentation.from_spec(augmentation_spec(model, augment, spec), seed=seed)
