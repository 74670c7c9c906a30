"""Composition of unlearning runs: merge what each run did best.

- ``swap``: the feature extractor (normalisation + body) of run A with the head of run B,
  optionally fine-tuned on retain-train; works for every zoo model because every model splits
  its state into ``norm.``/``body.`` and ``classifier.`` keys (the reference code's swap was a
  no-op for ResNet);
- ``interpolate``: weights (1 - a) * A + a * B, BatchNorm statistics recomputed on retain
  data (averaged running statistics do not describe the averaged network);
- ``pareto_front``: the candidates no other candidate beats on both forgetting and retention.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medunlearn.data.batches import iterate_batches
from medunlearn.data.images import LabelledImages
from medunlearn.models import ZooModel
from medunlearn.unlearn.augment import training_transform
from medunlearn.unlearn.psg import recompute_bn, set_bn_eval


def _check_compatible(a: ZooModel, b: ZooModel) -> None:
    if a.config != b.config:
        raise ValueError(f"cannot compose {a.config} with {b.config}: architectures differ")


def swap(features_from: ZooModel, head_from: ZooModel) -> ZooModel:
    """Combine ``features_from``'s feature extractor with ``head_from``'s head.

    Args:
        features_from: gives the ``norm.`` and ``body.`` state.
        head_from: gives the ``classifier.`` state (and is copied as the container).

    Returns:
        A new model in eval mode; the inputs are not modified.

    Raises:
        ValueError: the two architectures differ.
        RuntimeError: the state does not split into feature and head keys.
    """
    _check_compatible(features_from, head_from)
    model = copy.deepcopy(head_from)
    missing, unexpected = model.load_state_dict(features_from.feature_state(), strict=False)
    if unexpected or set(missing) != set(head_from.head_state()):
        raise RuntimeError(f"feature/head split failed: missing {missing}, unexpected {unexpected}")
    return model.eval()


def fine_tune(
    model: ZooModel,
    retain: LabelledImages,
    epochs: int = 1,
    lr: float = 1e-4,
    freeze_features: bool = True,
    batch_size: int = 64,
    seed: int = 0,
    augment: bool = True,
) -> ZooModel:
    """Fine-tune a composed model on retain-train with BatchNorm statistics kept fixed.

    Adam, cross-entropy, seeded shuffling. ``freeze_features`` trains the head only (the
    usual choice after a swap: the features already retained well). Images go through the
    model's training augmentation unless ``augment`` is false.

    Args:
        model: the composed model (copied, not modified).
        retain: retain-train images.
        epochs: passes over ``retain``.
        lr: Adam's learning rate.
        freeze_features: train the head only.
        batch_size: images per step.
        seed: seed of the shuffling and the augmentation.
        augment: use the model's recorded training augmentation.

    Returns:
        A new model in eval mode, every parameter trainable again.

    Raises:
        ValueError: the recorded augmentation is invalid.
    """
    model = copy.deepcopy(model)
    transform = training_transform(model, seed, augment)
    params = model.classifier.parameters() if freeze_features else model.parameters()
    if freeze_features:
        for p in model.body.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for _ in range(epochs):
        for images, labels in iterate_batches(
            retain,
            batch_size,
            shuffle=True,
            generator=generator,
            device=device,
            augment=transform,
        ):
            model.train()
            set_bn_eval(model)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def interpolate(
    a: ZooModel, b: ZooModel, alpha: float, retain: LabelledImages | None = None
) -> ZooModel:
    """Interpolate weights, theta = (1 - alpha) * theta_A + alpha * theta_B (``torch.lerp``).

    Integer buffers (BatchNorm's batch counts) are taken from ``a``; BatchNorm statistics are
    then recomputed on ``retain`` when given (averaged running statistics do not describe
    the averaged network). At alpha 0 and 1 the endpoints are returned unchanged
    (statistics included).

    Args:
        a: the model at alpha 0.
        b: the model at alpha 1 (same architecture).
        alpha: the interpolation point, in [0, 1].
        retain: images to re-estimate BatchNorm statistics on, or ``None``.

    Returns:
        A new model in eval mode; the inputs are not modified.

    Raises:
        ValueError: the architectures differ, or ``alpha`` is outside [0, 1].
    """
    _check_compatible(a, b)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha in (0, 1):
        return copy.deepcopy(a if alpha == 0 else b).eval()
    model = copy.deepcopy(a)
    sb = b.state_dict()
    merged = {}
    for key, va in a.state_dict().items():
        vb = sb[key]
        merged[key] = (
            torch.lerp(va, vb.to(va.dtype), alpha) if va.is_floating_point() else va.clone()
        )
    model.load_state_dict(merged)
    if retain is not None:
        recompute_bn(model, retain)
    return model.eval()


@dataclass
class Candidate:
    """A model with the two numbers composition trades off (both: higher is better)."""

    name: str
    forgetting: float  # e.g. 1 - forget-test accuracy, or -Avg Gap
    retention: float  # e.g. retain-test accuracy


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Return the candidates not dominated by another (>= on both, > on one), in input order.

    Args:
        candidates: models with their forgetting and retention (higher is better for both).

    Returns:
        The non-dominated candidates.
    """
    front = []
    for c in candidates:
        dominated = any(
            o.forgetting >= c.forgetting
            and o.retention >= c.retention
            and (o.forgetting > c.forgetting or o.retention > c.retention)
            for o in candidates
        )
        if not dominated:
            front.append(c)
    return front
