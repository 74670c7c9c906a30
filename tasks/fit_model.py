"""Step: train a zoo model (deployed model or retrain reference) on the training split."""

from __future__ import annotations

import sys
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.dataset import DatasetSplits
from medunlearn.models import build_model
from medunlearn.models.training import EpochLog, TrainConfig, TrainResult, train_classifier


@task(name="fit-model", cache_policy=NO_CACHE)
def fit_model(data: DatasetSplits, cfg: dict[str, Any]) -> TrainResult:
    """Build ``cfg.model`` for the dataset's classes and train it; log every epoch.

    Args:
        data: the dataset's splits (train, val, info).
        cfg: the params file's ``train`` section: ``model``, ``model_kwargs``, ``seed`` and
            the :class:`~medunlearn.models.training.TrainConfig` fields.

    Returns:
        The training result: the best epoch's model, per-epoch history (losses,
        accuracies in [0, 1], seconds) and ``seconds_per_epoch``.
    """
    logger = get_run_logger()
    info = data.info
    model = build_model(
        cfg["model"],
        len(info.class_names),
        info.channels,
        info.image_size,
        seed=int(cfg.get("seed", 0)),
        **cfg.get("model_kwargs", {}),
    )

    def log_epoch(log: EpochLog) -> None:
        logger.info(
            "epoch %d: loss %.4f, train acc %.3f, val acc %.3f, val bal acc %.3f (%.1fs)",
            log.epoch,
            log.train_loss,
            log.train_accuracy,
            log.val_accuracy,
            log.val_balanced_accuracy,
            log.seconds,
        )

    result = train_classifier(
        model,
        data.train,
        data.val,
        info.class_names,
        TrainConfig.from_params(cfg),
        on_epoch=log_epoch,
        progress=sys.stderr.isatty(),
    )
    logger.info(
        "best epoch %d of %d, %.1fs per epoch",
        result.best_epoch,
        len(result.history),
        result.seconds_per_epoch,
    )
    return result
