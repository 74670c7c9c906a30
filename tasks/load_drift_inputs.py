"""Step: what a drift watch compares: the production model, a sample of the rows it trained
on, and a sample of the newest incoming batch, decoded at the model's input size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.checkpoint import load_checkpoint
from medunlearn.data.dataset import load_dataset
from medunlearn.drift import decode_all, newest_manifest, read_batch, sample_rows, training_rows
from medunlearn.models import ZooModel


@dataclass
class DriftInputs:
    model: ZooModel
    reference: pd.DataFrame
    reference_images: torch.Tensor  # (N, C, H, W) in [0, 1]
    batch_path: str
    batch: pd.DataFrame
    batch_images: torch.Tensor  # (M, C, H, W) in [0, 1]


@task(name="load-drift-inputs", cache_policy=NO_CACHE)
def load_drift_inputs(
    dataset_dir: str,
    checkpoint: str,
    incoming: str,
    forgotten: list[Any],
    max_images: int,
    seed: int,
) -> DriftInputs:
    """Decode at most ``max_images`` per side (seeded samples); ``forgotten``: the requests
    applied in the production model's lineage (their training rows are not its data)."""
    logger = get_run_logger()
    model, _ = load_checkpoint(checkpoint)
    info, manifest = load_dataset(dataset_dir)
    reference = sample_rows(training_rows(manifest, forgotten), max_images, seed)
    reference_images = decode_all(
        [Path(dataset_dir) / p for p in reference["path"].astype(str)], info.spec
    )
    batch_path = newest_manifest(incoming)
    frame, _ = read_batch(batch_path, info.spec, decode=False)
    batch = sample_rows(frame, max_images, seed + 1)
    _, batch_images = read_batch(batch_path, info.spec, rows=batch)
    logger.info(
        "drift watch: %d training images of %s vs %d of batch %s",
        len(reference),
        checkpoint,
        len(batch),
        batch_path,
    )
    return DriftInputs(model, reference, reference_images, str(batch_path), batch, batch_images)
