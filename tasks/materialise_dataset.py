"""Step: build a dataset from its source (demo, MedMNIST, CSV) under ``data/<name>``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data import load_source, materialise


@task(name="materialise-dataset", cache_policy=NO_CACHE)
def materialise_dataset(cfg: dict[str, Any], data_root: str | Path = "data") -> dict[str, Any]:
    """Validate the source fully, then write ``data/<cfg.name>`` atomically.

    Args:
        cfg: the params file's ``data`` section: ``name``, ``source``, ``image_size``
            (pixels, square), ``channels`` and the source's settings.
        data_root: the folder datasets go under.

    Returns:
        The dataset's info as a mapping (what ``dataset.json`` records: classes, size,
        channels, split counts, number of patient groups).
    """
    logger = get_run_logger()
    source = load_source(cfg)
    target = Path(data_root) / cfg["name"]
    info = materialise(
        source, target, int(cfg["image_size"]), int(cfg["channels"]), name=cfg["name"]
    )
    logger.info(
        "materialised %s from %s: %s images in %d groups, classes %s",
        target,
        info.source,
        info.counts,
        info.n_groups,
        info.class_names,
    )
    return asdict(info)
