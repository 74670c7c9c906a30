"""Step: load what a revision starts from: the dataset, the deployed model, the request."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.dataset import DatasetInfo
from medunlearn.data.manifest import ManifestError, read_manifest_csv
from medunlearn.data.request import ForgetRequest
from medunlearn.models import ZooModel
from medunlearn.models.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint
from medunlearn.versioning import dataset_fingerprint, file_sha256


@dataclass
class RevisionInputs:
    """What a revision starts from.

    Attributes:
        dataset_dir: the materialised dataset's folder.
        info: its ``dataset.json``.
        manifest: its manifest as read (validated by the GX suite before any image is
            opened).
        deployed_path: the deployed checkpoint.
        deployed: the deployed model (eval mode).
        deployed_meta: its checkpoint metadata.
        deployed_sha256: the checkpoint's SHA-256.
        request: the forget request.
        data_fingerprint: content hash of the dataset (pixels included), in every cache key.
    """

    dataset_dir: str
    info: DatasetInfo
    manifest: pd.DataFrame  # as read: validated by the GX suite before any image is opened
    deployed_path: str
    deployed: ZooModel
    deployed_meta: CheckpointMeta
    deployed_sha256: str
    request: ForgetRequest
    data_fingerprint: str  # content hash of the dataset (pixels included): in every cache key


@task(name="load-revision-inputs", cache_policy=NO_CACHE)
def load_revision_inputs(
    dataset_dir: str,
    deployed_path: str,
    request: str | dict[str, Any] | ForgetRequest,
    manifest: pd.DataFrame | None = None,
) -> RevisionInputs:
    """Read the dataset's info and manifest, the deployed checkpoint and the request.

    Images are not opened here: the validation step checks them first.

    Args:
        dataset_dir: the materialised dataset's folder.
        deployed_path: the deployed model's checkpoint.
        request: a request file, its mapping, or a parsed request (the maintenance flow's
            plan parses it once).
        manifest: the manifest when the caller read it already (read here otherwise).

    Returns:
        The revision's inputs.

    Raises:
        ManifestError: the folder holds no ``dataset.json``.
        CheckpointError: the model's classes differ from the dataset's.
    """
    logger = get_run_logger()
    if isinstance(request, ForgetRequest):  # resolved from the forget ledger
        forget = request
    elif isinstance(request, dict):
        forget = ForgetRequest.from_dict(request, "request parameter")
    else:
        forget = ForgetRequest.load(request)
    model, meta = load_checkpoint(deployed_path)
    info_path = Path(dataset_dir) / "dataset.json"
    if not info_path.is_file():
        raise ManifestError(f"{info_path}: dataset not found; run medunlearn prepare")
    info = DatasetInfo.from_json(json.loads(info_path.read_text()), str(info_path))
    if manifest is None:
        manifest = read_manifest_csv(Path(dataset_dir) / "manifest.csv")
    if list(meta.class_names) != list(info.class_names):
        raise CheckpointError(
            f"{deployed_path}: model classes {meta.class_names} differ from the dataset's "
            f"{info.class_names} ({dataset_dir}): revise the model trained on this dataset"
        )
    logger.info(
        "request %s (%s); deployed model %s; dataset %s with %d manifest rows",
        forget.hash,
        forget.reason,
        deployed_path,
        dataset_dir,
        len(manifest),
    )
    return RevisionInputs(
        dataset_dir=str(dataset_dir),
        info=info,
        manifest=manifest,
        deployed_path=str(deployed_path),
        deployed=model,
        deployed_meta=meta,
        deployed_sha256=file_sha256(deployed_path),
        request=forget,
        data_fingerprint=dataset_fingerprint(dataset_dir),
    )
