"""Step: open a materialised dataset's train/val/test images (optionally the retain cohort)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.dataset import DatasetSplits, open_splits


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(
    dataset_dir: str | Path, max_in_memory_mb: float = 1024, exclude: str | None = None
) -> DatasetSplits:
    """Open the splits; ``exclude`` (a pandas query) drops matching train/val rows.

    Args:
        dataset_dir: the materialised dataset's folder.
        max_in_memory_mb: in-memory budget per split (MiB of float32 pixels); a larger split
            is streamed from disk.
        exclude: a pandas query over manifest columns of rows to leave out, or ``None``.

    Returns:
        The dataset's info, manifest and opened splits (see
        :func:`medunlearn.data.dataset.open_splits`, which raises ``ManifestError``).
    """
    data = open_splits(dataset_dir, max_in_memory_mb, exclude)
    get_run_logger().info(
        "loaded %s: train %d, val %d, test %d images (%s)%s",
        dataset_dir,
        len(data.train),
        len(data.val),
        len(data.test),
        "in memory" if data.train.in_memory else "streamed",
        f"; excluded {data.excluded} by {exclude!r}" if exclude else "",
    )
    return data
