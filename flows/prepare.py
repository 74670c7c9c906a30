"""Flow ``prepare``: materialise the dataset named in ``params.yaml:data`` and version it.

    medunlearn prepare [--params params.yaml]   # data/<name>: the demo, MedMNIST or a CSV

Reads only the ``data`` section. Steps: materialise-dataset -> track-data (``dvc add data``,
when ``data.track_with_dvc`` is true and this is a DVC project).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from medunlearn.config import load_section
from tasks.materialise_dataset import materialise_dataset
from tasks.track_data import track_data


@flow(name="prepare", flow_run_name="prepare-data", log_prints=True)
def prepare_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Build ``data/<name>``; nothing under ``data/`` changes if the source is invalid.

    Args:
        params_path: the params file (its ``data`` section).

    Returns:
        ``dataset`` (its folder), ``data_version`` (the DVC hash, ``None`` when not
        tracked) and the dataset's info (classes, image size in pixels, channels, counts).
    """
    cfg = load_section("data", params_path)
    root = cfg.get("root", "data")
    info = materialise_dataset(cfg, root)
    version = track_data(root) if cfg.get("track_with_dvc", True) else None
    return {"dataset": f"{root}/{cfg['name']}", "data_version": version, **info}
