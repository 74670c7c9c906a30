"""Step: what a drift watch compares, decoded at the model's input size.

The production model, a sample of the rows it trained on, and a sample of the newest
incoming batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.dataset import load_dataset
from medunlearn.data.drift import (
    decode_all,
    heldout_rows,
    newest_manifest,
    read_batch,
    sample_rows,
    training_rows,
    untested_metadata,
)
from medunlearn.models import ZooModel
from medunlearn.models.checkpoint import load_checkpoint
from medunlearn.versioning import file_sha256

MIN_HELDOUT = 50  # fewer held-out rows: the training rows are the image reference


@dataclass
class DriftInputs:
    """What a drift watch compares.

    Attributes:
        model: the production model (eval mode).
        reference: every training row of the model (manifest metadata).
        reference_images: ``(N, C, H, W)`` float32 in [0, 1], a seeded sample of held-out
            rows (of training rows when fewer than :data:`MIN_HELDOUT` are held out).
        batch_path: the batch manifest.
        batch: every batch row (metadata).
        batch_images: ``(M, C, H, W)`` float32 in [0, 1], a seeded sample of the batch.
        batch_sha256: the batch manifest's SHA-256.
        notes: what was not tested, or tested against a weaker reference, and why.
    """

    model: ZooModel
    reference: pd.DataFrame  # every training row (metadata)
    reference_images: torch.Tensor  # (N, C, H, W) in [0, 1]: a sample of held-out rows
    batch_path: str
    batch: pd.DataFrame  # every batch row (metadata)
    batch_images: torch.Tensor  # (M, C, H, W) in [0, 1]: a sample of the batch
    batch_sha256: str
    notes: list[str]


@task(name="load-drift-inputs", cache_policy=NO_CACHE)
def load_drift_inputs(
    dataset_dir: str,
    checkpoint: str,
    incoming: str,
    forgotten: list[Any],
    max_images: int,
    seed: int,
) -> DriftInputs:
    """Load the production model and decode at most ``max_images`` per side (seeded samples).

    Args:
        dataset_dir: the materialised dataset's folder.
        checkpoint: the production model's checkpoint.
        incoming: the folder of incoming batches (or a batch manifest); the newest is read.
        forgotten: the requests applied in the production model's lineage (their training
            rows are not its data).
        max_images: the most images decoded per side.
        seed: the reference sample's seed (the batch's is ``seed + 1``).

    Returns:
        The model, the reference and batch rows, both image samples and notes.
    """
    logger = get_run_logger()
    model, _ = load_checkpoint(checkpoint)
    info, manifest = load_dataset(dataset_dir)
    trained = training_rows(manifest, forgotten)
    heldout = heldout_rows(manifest, forgotten)
    notes = []
    if len(heldout) < MIN_HELDOUT:
        notes.append(
            f"images: {len(heldout)} held-out rows (< {MIN_HELDOUT}); training images are the "
            "reference, so a model that fits its training images can look drifted"
        )
        heldout = trained
    sample = sample_rows(heldout, max_images, seed)
    reference_images = decode_all(
        [Path(dataset_dir) / p for p in sample["path"].astype(str)], info.spec
    )
    batch_path = newest_manifest(incoming)
    frame, _ = read_batch(batch_path, info.spec, decode=False)
    batch = sample_rows(frame, max_images, seed + 1)
    _, batch_images = read_batch(batch_path, info.spec, rows=batch)
    notes += untested_metadata(trained, frame)
    logger.info(
        "drift watch: %d training rows (%d reference images) of %s vs %d rows (%d images) of %s",
        len(trained),
        len(sample),
        checkpoint,
        len(frame),
        len(batch),
        batch_path,
    )
    return DriftInputs(
        model,
        trained,
        reference_images,
        str(batch_path),
        frame,
        batch_images,
        file_sha256(batch_path),
        notes,
    )
