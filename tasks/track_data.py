"""Step: version ``data/`` with DVC (``dvc add``), so every model records its data hash."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.versioning import track_with_dvc


@task(name="track-data", cache_policy=NO_CACHE)
def track_data(data_root: str | Path = "data") -> str:
    """``dvc add data`` and return the new data version (its DVC hash).

    Args:
        data_root: the folder to version.

    Returns:
        The data version: the DVC hash of ``data_root``.
    """
    version = track_with_dvc(data_root)
    get_run_logger().info("data version %s (run `dvc push` to store it in the remote)", version)
    return version
