"""Step: write the checkpoint (weights + metadata) and the training report, atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.atomic import write_json, write_text
from medunlearn.config import params_hash
from medunlearn.data.dataset import DatasetSplits
from medunlearn.models.checkpoint import CheckpointMeta, save_checkpoint
from medunlearn.models.training import (
    TrainResult,
    history_rows,
    training_headline,
    training_report,
)
from medunlearn.versioning import data_version


@task(name="save-model", cache_policy=NO_CACHE)
def save_model(
    result: TrainResult,
    metrics: dict[str, Any],
    data: DatasetSplits,
    cfg: dict[str, Any],
    role: str,
    output: str | Path,
    report: str | Path,
    history: str | Path | None = None,
    exclude: str | None = None,
) -> dict[str, Any]:
    """Write the checkpoint, the training report and the history, each atomically.

    Called only after training and evaluation succeeded, so a failed run leaves the old
    files intact.

    Args:
        result: the training result (the best epoch's model, history).
        metrics: :func:`tasks.evaluate_model.evaluate_model`'s ``val`` and ``test`` metrics.
        data: the dataset's splits (its folder's ``.dvc`` file gives the data version).
        cfg: the params file's ``train`` section (model, augmentation; hashed).
        role: ``deployed`` or ``retrain``.
        output: the checkpoint path.
        report: the training report's path (JSON); for the deployed model at
            ``train.report``, its headline figures also go to ``train.metrics``.
        history: the per-epoch history's path (CSV), or None for none.
        exclude: the pandas query that left rows out of training, or None.

    Returns:
        The training report as written (role, model, dataset, data version, counts, best
        epoch, seconds per epoch, metrics, checkpoint path).
    """
    version = data_version(Path(data.directory).parent.with_suffix(".dvc"))
    context = {
        "role": role,
        "model": cfg["model"],
        "dataset": str(data.directory),
        "data_version": version,
        "params_hash": params_hash(cfg),
        "exclude": exclude,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
    }
    meta = CheckpointMeta.for_model(
        result.model,
        data.info.class_names,
        data.info.image_size,
        data_version=version,
        params_hash=context["params_hash"],
        metrics={"val": metrics["val"], "test": metrics["test"]},
        augmentation=dict(cfg.get("augmentation") or {}),
        extra={k: context[k] for k in ("role", "dataset", "exclude", "n_train")}
        | {"best_epoch": result.best_epoch},
    )
    save_checkpoint(output, result.model, meta)
    body = training_report(result, metrics, **context, checkpoint=str(output))
    write_json(report, body)
    if role == "deployed" and cfg.get("metrics") and str(report) == str(cfg.get("report")):
        write_json(cfg["metrics"], training_headline(body))  # what `dvc metrics show` reads
    if history is not None:
        rows = history_rows(result)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(history, buffer.getvalue())
    get_run_logger().info("saved %s (data version %s) and %s", output, version, report)
    return body
