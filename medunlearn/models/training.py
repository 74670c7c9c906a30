"""Supervised training of a zoo model: the deployed model, and the retrain reference.

The same function trains both: the deployed model on the full training split, the retrain
reference on the retain cohort only (the gold standard unlearning is compared against). A
plain PyTorch loop is enough here and keeps the numerical behaviour visible: seeded shuffling
and augmentation, best epoch chosen on the validation split, bf16 autocast on CUDA.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medunlearn.data.augment import BatchAugmentation
from medunlearn.data.batches import iterate_batches
from medunlearn.data.images import LabelledImages
from medunlearn.models import ZooModel
from medunlearn.models.device import autocast, pick_device, seed_everything
from medunlearn.models.evaluation import evaluate

SELECT_METRICS = ("accuracy", "balanced_accuracy", "macro_auc")


@dataclass
class TrainConfig:
    """The ``train`` section of ``params.yaml`` (model fields are read by the caller)."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # cosine | none
    class_weights: str = "none"  # none | balanced (inverse class frequency in the loss)
    select_metric: str = "balanced_accuracy"
    augmentation: dict[str, Any] = field(default_factory=dict)  # flip, rotate_deg, shift
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    # NHWC activations (results differ from NCHW by float rounding and the few ReLUs that
    # rounding flips: after 3 SGD steps 1.5e-5 at most on an AVX-512 Xeon). Off by default:
    # on 2 AMD EPYC cores (issue 25) the demo's AllCNN width 0.25 epoch took 3.8-4.4 s vs
    # 4.5-5.0 s in one run and the whole 8-epoch training 45.1 s vs 38.3 s in another; the
    # HAM10000 recipe's step was 0.95x. Measure on your hardware (GPUs usually gain).
    channels_last: bool = False
    # torch.compile the training step (forward + backward; evaluation stays eager). Off by
    # default: on 2 AMD EPYC cores (issue 25) the demo's epoch fell from about 3.5 s to 2.9 s,
    # but the first compilation costs about 60 s (about 5 s once inductor's on-disk cache is
    # warm), more than a whole 8-epoch demo training. It pays for long trainings and banks of
    # retrains in one process; results differ from eager by float rounding.
    compile: bool = False
    # bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX; float32 elsewhere, with a
    # warning). Issue 25, AMD EPYC with AVX512-BF16, 2 cores, 3 seeds: the demo trained 3.0x
    # and the HAM10000 recipe at 32 px 2.4x faster than before the batched augmentation, at
    # the same test accuracy. Off here (library callers opt in), on in the shipped params.yaml.
    cpu_bf16: bool = False

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        """Read the ``train`` section; keys that are not fields (model, outputs) are ignored.

        Args:
            section: the ``train`` section of ``params.yaml``.

        Returns:
            The recipe.

        Raises:
            ValueError: an unknown ``select_metric``, or ``epochs``/``batch_size`` below 1.
            TypeError: a field of the wrong kind for the dataclass (e.g. a mapping as ``lr``).
        """
        known = set(cls.__dataclass_fields__)
        cfg = cls(**{k: v for k, v in section.items() if k in known})
        if cfg.select_metric not in SELECT_METRICS:
            raise ValueError(f"train.select_metric must be one of {SELECT_METRICS}")
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be positive")
        return cfg


@dataclass
class EpochLog:
    """One epoch of training: loss, accuracies in [0, 1], and timings in seconds."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    val_balanced_accuracy: float
    val_macro_auc: float | None
    seconds: float  # the whole epoch: training steps, validation, keeping the best state
    train_seconds: float  # the training steps alone


@dataclass
class TrainResult:
    """A trained model (weights of the best epoch), its epoch log and wall time (seconds)."""

    model: ZooModel
    best_epoch: int
    history: list[EpochLog]
    seconds: float

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of an epoch in seconds (steps, validation, keeping the best state)."""
        return float(np.mean([h.seconds for h in self.history]))


def channel_statistics(
    dataset: LabelledImages, batch_size: int = 512
) -> tuple[list[float], list[float]]:
    """Compute per-channel mean and std of the (un-augmented) training images.

    Accumulated in float64 over batches; the standard deviation is the population one
    (ddof 0).

    Args:
        dataset: the training images (N, C, H, W), [0, 1].
        batch_size: images per batch while accumulating.

    Returns:
        ``(mean, std)``: one float per channel each, in [0, 1] pixel units.
    """
    total = total_sq = count = 0.0
    for images, _ in iterate_batches(dataset, batch_size):
        images = images.double()
        total = total + images.sum(dim=(0, 2, 3))
        total_sq = total_sq + (images**2).sum(dim=(0, 2, 3))
        count += images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Build the optimiser the recipe names over all of ``model``'s parameters.

    Args:
        model: the model to train.
        cfg: the recipe (``optimizer``, ``lr``, ``weight_decay``, ``momentum`` for SGD).

    Returns:
        ``torch.optim.Adam``, ``AdamW`` or ``SGD``.

    Raises:
        ValueError: an unknown optimizer.
    """
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"train.optimizer: unknown optimizer '{cfg.optimizer}'")


def _loss(
    train: LabelledImages, num_classes: int, cfg: TrainConfig, device: torch.device
) -> nn.Module:
    if cfg.class_weights == "none":
        return nn.CrossEntropyLoss()
    if cfg.class_weights != "balanced":
        raise ValueError(f"train.class_weights must be none or balanced, not '{cfg.class_weights}'")
    counts = torch.bincount(train.labels, minlength=num_classes).float()
    weights = counts.sum() / (num_classes * counts.clamp_min(1))
    return nn.CrossEntropyLoss(weight=weights.to(device))


def train_classifier(
    model: ZooModel,
    train: LabelledImages,
    val: LabelledImages,
    class_names: list[str],
    cfg: TrainConfig,
    on_epoch: Callable[[EpochLog], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` on ``train``; return the weights of the best epoch on ``val``.

    The input normalisation inside the model is set from the training images first, so the
    checkpoint carries the statistics it was trained with. Each epoch shuffles (seeded) and
    augments, drops an incomplete last batch when there are more images than one batch, and
    steps a cosine schedule per batch; the epoch with the best ``cfg.select_metric`` on
    ``val`` wins (ties: the earlier). The model is trained in place.

    Args:
        model: the untrained (or starting) model.
        train: training images, (C, H, W) in [0, 1].
        val: validation images.
        class_names: the classes, in output order.
        cfg: the recipe (epochs, optimiser, augmentation, seed, device, precision, ...).
        on_epoch: called with each epoch's log.
        progress: show a tqdm bar per epoch.

    Returns:
        The model in eval mode with the best epoch's weights (on ``cfg.device``), that
        epoch, every epoch's log and the wall time in seconds.

    Raises:
        ValueError: an empty training or validation set, or an unknown optimizer or class
            weighting.
        RuntimeError: CUDA was requested but is not available.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError("training and validation sets must not be empty")
    generator = seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model.norm.set_statistics(*channel_statistics(train))
    model.to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    augment = BatchAugmentation.from_spec(cfg.augmentation, seed=cfg.seed)
    drop_last = len(train) > cfg.batch_size
    steps_per_epoch = (
        len(train) // cfg.batch_size if drop_last else -(-len(train) // cfg.batch_size)
    )
    # the compiled wrapper shares the module's parameters; evaluation and the returned model
    # stay eager (no recompilation for eval mode, checkpoints and exports unchanged)
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = make_optimizer(model, cfg)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
        if cfg.scheduler == "cosine"
        else None
    )
    criterion = _loss(train, len(class_names), cfg, device)

    best_score, best_epoch, best_state = -np.inf, 0, None
    history: list[EpochLog] = []
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        # running sums stay on the device: no host sync per step on a GPU
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        batches = iterate_batches(
            train,
            cfg.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=drop_last,
            device=device,
            augment=augment,
        )
        progress_bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=not progress,
        )
        for images, labels in progress_bar:
            images = images.contiguous(memory_format=memory_format)
            with autocast(device, cfg.amp, cfg.cpu_bf16):
                logits = step_model(images)
                loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        val_metrics = evaluate(model, val, class_names, device=device)
        log = EpochLog(
            epoch=epoch,
            train_loss=float(loss_sum) / seen,
            train_accuracy=int(correct) / seen,
            val_accuracy=val_metrics["accuracy"],
            val_balanced_accuracy=val_metrics["balanced_accuracy"],
            val_macro_auc=val_metrics["macro_auc"],
            seconds=time.perf_counter() - t0,
            train_seconds=train_seconds,
        )
        history.append(log)
        score = val_metrics[cfg.select_metric]
        score = -np.inf if score is None else score
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(log)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)  # checkpoints and exports stay NCHW
    model.eval()
    return TrainResult(
        model=model, best_epoch=best_epoch, history=history, seconds=time.perf_counter() - start
    )


def training_report(result: TrainResult, metrics: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Build the JSON report of a training run (DVC metrics file).

    Args:
        result: the training's result.
        metrics: ``{"val": ..., "test": ...}`` classification metrics of the model.
        **context: fields written first (model, data version, params hash, ...).

    Returns:
        ``context`` plus ``best_epoch``, ``epochs``, ``seconds`` and ``seconds_per_epoch``
        (rounded to 0.01 s), ``val`` and ``test``.
    """
    return {
        **context,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "seconds": round(result.seconds, 2),
        "seconds_per_epoch": round(result.seconds_per_epoch, 2),
        "val": metrics["val"],
        "test": metrics["test"],
    }


TRAIN_HEADLINE = (
    "role",
    "model",
    "data_version",
    "best_epoch",
    "epochs",
    "seconds_per_epoch",
    "val.accuracy",
    "test.accuracy",
    "test.balanced_accuracy",
    "test.macro_auc",
)


def training_headline(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a training report, the file ``dvc metrics show`` reads.

    Args:
        report: :func:`training_report`'s dict (``val``/``test`` nested).

    Returns:
        A flat dict with the :data:`TRAIN_HEADLINE` keys (dotted keys for nested figures;
        accuracies and AUC in [0, 1], seconds per epoch in seconds); a missing figure is
        None.
    """
    out: dict[str, Any] = {}
    for key in TRAIN_HEADLINE:
        value: Any = report
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


def history_rows(result: TrainResult) -> list[dict[str, Any]]:
    """Return one row per epoch for ``dvc plots`` (loss and accuracy curves).

    Args:
        result: the training's result.

    Returns:
        Each :class:`EpochLog` as a dict.
    """
    return [asdict(h) for h in result.history]
