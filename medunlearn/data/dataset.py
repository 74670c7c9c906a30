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
    clean_manifest,
    read_manifest_csv,
    resolve_paths,
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
        """The model input these images are decoded to (square size in pixels, channels)."""
        return ImageSpec(self.image_size, self.channels)

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> DatasetInfo:
        """Read the info from ``dataset.json``'s content; unknown keys are ignored.

        Args:
            obj: the parsed JSON object.
            where: the file it came from, named in the error.

        Returns:
            The info.

        Raises:
            ManifestError: the ``format`` is not :data:`DATASET_FORMAT`.
        """
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
    """Write ``source`` to ``target`` (``data/<name>``) atomically, after full validation.

    Every file of a file-backed source must exist under its root and decode at the model's
    size first; arrays are written as PNG. The folder is built in a staging folder and swapped
    in only when complete (:func:`medunlearn.atomic.staged_directory`), so a bad source never
    overwrites a good dataset.

    Args:
        source: the validated manifest with its files or arrays.
        target: the dataset's folder.
        image_size: the model's square input size, pixels.
        channels: the model's channels, 1 or 3.
        name: the dataset's name in ``dataset.json`` (default: the folder's name).

    Returns:
        What ``dataset.json`` records: classes, size, channels, split counts and the number of
        patient groups.

    Raises:
        ValueError: a file-backed source without a root, or arrays whose count differs from
            the manifest's rows.
        ManifestError: a path escapes the root or is missing, or a file does not decode
            (naming the row and file).
    """
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
    """Read a materialised dataset's info and validated manifest (files must exist).

    Args:
        directory: the dataset's folder (``data/<name>``).

    Returns:
        ``(info, manifest)``: the manifest validated against the recorded classes, labels
        as text.

    Raises:
        ManifestError: no ``dataset.json`` (materialise first), an unknown format, or a
            manifest that fails validation (naming file, row and column).
    """
    directory = Path(directory)
    info_path = directory / "dataset.json"
    if not info_path.is_file():
        raise ManifestError(
            f"{info_path}: dataset not found; materialise it first (medunlearn prepare)"
        )
    info = DatasetInfo.from_json(json.loads(info_path.read_text()), str(info_path))
    manifest_path = directory / "manifest.csv"
    df = read_manifest_csv(manifest_path)
    df, _ = clean_manifest(df, str(manifest_path), info.class_names, root=directory)
    return info, df


def open_split(
    directory: str | Path,
    split: str,
    info: DatasetInfo,
    manifest: pd.DataFrame,
    max_in_memory_mb: float = 1024,
) -> LabelledImages:
    """Open the images of one split (``train``/``val``/``test``) of a materialised dataset.

    Args:
        directory: the dataset's folder; manifest paths are relative to it.
        split: ``train``, ``val`` or ``test``.
        info: the dataset's info (classes and input shape).
        manifest: the manifest (or the rows of it to use).
        max_in_memory_mb: decode into memory up to this many MiB of float32 pixels, else
            stream from disk.

    Returns:
        The split's images (C, H, W) in [0, 1] with class-index labels.

    Raises:
        ValueError: an unknown split.
        ManifestError: a missing file or one that does not decode (naming row and file).
    """
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
    """Select the rows a pandas ``query`` over manifest columns matches.

    Args:
        manifest: the manifest.
        query: a ``DataFrame.query`` expression (python engine), e.g. ``"device == 'a'"``.

    Returns:
        Boolean mask (N,) over the manifest's rows, in their order.

    Raises:
        ManifestError: the expression is invalid or names a missing column (one line, the
            pandas error's first line).
    """
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
    """Load a materialised dataset and open its three splits, optionally excluding rows.

    Rows the ``exclude`` query matches are removed from train and val only (the retrain
    reference is trained on the retain cohort); test stays whole so the forgotten rows can
    still be evaluated.

    Args:
        directory: the dataset's folder.
        max_in_memory_mb: in-memory budget per split, MiB of float32 pixels.
        exclude: a :func:`select_rows` query of rows to leave out, or ``None``.

    Returns:
        The dataset's info, manifest (all rows) and opened splits, with the counts removed
        from train and val.

    Raises:
        ManifestError: the dataset cannot be loaded, the query is bad, or a split is empty
            after the exclusion.
    """
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
