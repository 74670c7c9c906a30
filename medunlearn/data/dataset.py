"""A materialised dataset under ``data/<name>/``: the versioned input of every revision.

Layout (tracked by DVC as part of ``data/``)::

    data/<name>/manifest.csv   one row per image (the cohort manifest)
    data/<name>/images/...     image files, paths relative to the folder
    data/<name>/dataset.json   class list, image size and channels, split counts

Materialising validates everything (columns, splits, patients, paths, that every image
decodes) *before* writing, then swaps the folder in atomically: a bad source never
overwrites a good dataset.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medunlearn.atomic import staged_directory, write_json, write_text
from medunlearn.data.images import ImageLoader, ImageSpec, LabelledImages, open_images
from medunlearn.data.manifest import (
    SPLITS,
    ManifestError,
    read_manifest_csv,
    resolve_paths,
    validate_manifest,
)
from medunlearn.data.sources import SourceData

DATASET_FORMAT = "medunlearn.dataset/1"


@dataclass
class DatasetInfo:
    """What ``dataset.json`` records about a materialised dataset."""

    name: str
    source: str
    class_names: list[str]
    image_size: int
    channels: int
    counts: dict[str, int] = field(default_factory=dict)
    n_groups: int = 0
    format: str = DATASET_FORMAT

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(self.image_size, self.channels)

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> DatasetInfo:
        if obj.get("format") != DATASET_FORMAT:
            raise ManifestError(f"{where}: unknown dataset format {obj.get('format')!r}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in known})


def materialise(
    source: SourceData,
    target: str | Path,
    image_size: int,
    channels: int,
    name: str | None = None,
) -> DatasetInfo:
    """Write ``source`` to ``target`` (``data/<name>``) atomically, after full validation."""
    target = Path(target)
    name = name or target.name
    df = source.manifest.reset_index(drop=True)
    spec = ImageSpec(image_size, channels)
    if source.arrays is None:
        if source.root is None:
            raise ValueError("a file-backed source needs a root")
        files = resolve_paths(df, source.root, source.description)
        _check_decodable(df, files, spec, source.description)
        relative = [f.relative_to(source.root.resolve()).as_posix() for f in files]
    else:
        if len(source.arrays) != len(df):
            raise ValueError(f"{len(source.arrays)} arrays for {len(df)} manifest rows")
        files, relative = [], list(df["path"].astype(str))
    groups = df["patient_id"] if "patient_id" in df.columns else df["image_id"]
    info = DatasetInfo(
        name=name,
        source=source.description,
        class_names=list(source.class_names),
        image_size=image_size,
        channels=channels,
        counts={s: int((df["split"] == s).sum()) for s in SPLITS},
        n_groups=int(groups.nunique()),
    )
    with staged_directory(target) as stage:
        for i, rel in enumerate(relative):
            out = stage / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if source.arrays is None:
                shutil.copyfile(files[i], out)
            else:
                Image.fromarray(np.ascontiguousarray(source.arrays[i])).save(out, format="PNG")
        stored = df.copy()
        stored["path"] = relative
        write_text(stage / "manifest.csv", stored.to_csv(index=False, lineterminator="\n"))
        write_json(stage / "dataset.json", asdict(info))
    return info


def _check_decodable(df: pd.DataFrame, files: list[Path], spec: ImageSpec, source: str) -> None:
    loader = ImageLoader(spec)
    for i, path in enumerate(files):
        try:
            loader(path)
        except ManifestError as exc:
            raise ManifestError(
                f"{source}: row {i + 1} (image_id={df['image_id'].iloc[i]}), column 'path': {exc}"
            ) from exc


def load_dataset(directory: str | Path) -> tuple[DatasetInfo, pd.DataFrame]:
    """Read a materialised dataset's info and validated manifest (files must exist)."""
    directory = Path(directory)
    info_path = directory / "dataset.json"
    if not info_path.is_file():
        raise ManifestError(
            f"{info_path}: dataset not found; materialise it first (medunlearn prepare)"
        )
    info = DatasetInfo.from_json(json.loads(info_path.read_text()), str(info_path))
    manifest_path = directory / "manifest.csv"
    df = read_manifest_csv(manifest_path)
    df, _ = validate_manifest(df, str(manifest_path), info.class_names, root=directory)
    return info, df


def open_split(
    directory: str | Path,
    split: str,
    info: DatasetInfo,
    manifest: pd.DataFrame,
    max_in_memory_mb: float = 1024,
) -> LabelledImages:
    """Images of one split (``train``/``val``/``test``) of a materialised dataset."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'")
    rows = manifest[manifest["split"] == split]
    return open_images(
        rows,
        Path(directory),
        info.class_names,
        info.spec,
        max_in_memory_mb,
        source=str(Path(directory) / "manifest.csv"),
    )


@dataclass
class DatasetSplits:
    """A materialised dataset opened for training: info plus train/val/test images.

    ``excluded`` counts the rows an ``exclude`` query removed from train and val (the
    retrain reference is trained on the retain cohort only); test stays whole so the
    forgotten rows can still be evaluated.
    """

    directory: Path
    info: DatasetInfo
    manifest: pd.DataFrame
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    excluded: dict[str, int] = field(default_factory=dict)


def select_rows(manifest: pd.DataFrame, query: str) -> np.ndarray:
    """Boolean mask of the rows a pandas ``query`` over manifest columns matches."""
    try:
        matched = manifest.query(query, engine="python")
    except Exception as exc:  # pandas raises many types for a bad expression
        raise ManifestError(  # a Refusal: one line, no traceback
            f"bad row query {query!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    return manifest.index.isin(matched.index)


def open_splits(
    directory: str | Path, max_in_memory_mb: float = 1024, exclude: str | None = None
) -> DatasetSplits:
    """Load a materialised dataset and open its three splits, optionally excluding rows."""
    directory = Path(directory)
    info, manifest = load_dataset(directory)
    keep = np.ones(len(manifest), dtype=bool)
    excluded: dict[str, int] = {}
    if exclude:
        drop = select_rows(manifest, exclude) & manifest["split"].isin(["train", "val"]).to_numpy()
        excluded = {
            s: int((drop & (manifest["split"] == s).to_numpy()).sum()) for s in ("train", "val")
        }
        keep &= ~drop
    kept = manifest[keep]
    splits = {s: open_split(directory, s, info, kept, max_in_memory_mb) for s in SPLITS}
    for split, images in splits.items():
        if len(images) == 0:
            raise ManifestError(
                f"{directory}: split '{split}' is empty after excluding {exclude!r}"
            )
    return DatasetSplits(directory, info, manifest, excluded=excluded, **splits)
