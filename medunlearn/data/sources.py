"""Sources a dataset can be built from, each converted to one cohort manifest.

- ``csv``: a manifest CSV next to image files (PNG/JPEG, DICOM), as clinical exports arrive;
- ``medmnist``: a MedMNIST ``.npz`` file with ``{train,val,test}_{images,labels}``;
- ``demo``: the embedded demo (scikit-learn's digits with simulated devices and patients).

A source yields a validated manifest plus either files under a root or in-memory arrays;
``medunlearn.data.dataset.materialise`` writes either kind to the same on-disk layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medunlearn.data.demo import demo_source
from medunlearn.data.manifest import (
    SPLITS,
    ManifestError,
    assign_splits,
    check_columns,
    clean_manifest,
    read_manifest_csv,
)


@dataclass
class SourceData:
    """A validated manifest with its images: files under ``root`` or ``arrays`` (uint8).

    With ``arrays``, ``arrays[i]`` is the image of manifest row ``i`` shaped (H, W) or
    (H, W, C), and the ``path`` column says where materialisation will write it.
    """

    manifest: pd.DataFrame
    class_names: list[str]
    description: str
    root: Path | None = None
    arrays: np.ndarray | None = None


def from_csv(
    manifest_path: str | Path,
    class_names: list[str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_column: str | None = "patient_id",
) -> SourceData:
    """Build a source from a CSV manifest next to its image files.

    Relative paths resolve against the CSV's folder and may not leave it. Without a
    ``split`` column, splits are assigned by ``group_column`` (patient, lesion), so no group
    lands in two splits. A ``group_column`` other than ``patient_id`` (e.g. ``lesion_id``) is
    copied to ``patient_id``, the manifest's grouping key. A manifest without that column
    groups each image alone; one with blank cells in it is refused, naming the rows
    (:func:`check_group_cells`).

    Args:
        manifest_path: the CSV file.
        class_names: the model's classes (default: the sorted labels found).
        val_fraction: share of rows for validation when splits are assigned, in (0, 1).
        test_fraction: share of rows for test when splits are assigned, in (0, 1).
        seed: seed of the split assignment.
        group_column: the grouping column, or ``None`` to group each image alone.

    Returns:
        The validated manifest with its root (the CSV's folder, absolute).

    Raises:
        ManifestError: the manifest is unreadable or invalid (missing columns, blank group
            cells, both ``patient_id`` and another group column, bad splits or labels,
            missing files), naming file, row and column.
        ValueError: split fractions out of range.
    """
    manifest_path = Path(manifest_path)
    df = read_manifest_csv(manifest_path)
    if group_column and group_column != "patient_id" and group_column in df.columns:
        if "patient_id" in df.columns:
            raise ManifestError(
                f"{manifest_path}: has both 'patient_id' and group column '{group_column}'"
            )
        df["patient_id"] = df[group_column]
    if "split" not in df.columns:
        for column in ("image_id", "label"):
            if column not in df.columns:
                raise ManifestError(f"{manifest_path}: missing required column(s) ['{column}']")
        check_columns(df, str(manifest_path), ("image_id", "label"))  # names an empty cell
        if group_column:
            check_group_cells(df, manifest_path, group_column)
        df = assign_splits(df, val_fraction, test_fraction, seed, "patient_id")
    df, classes = clean_manifest(df, str(manifest_path), class_names, root=manifest_path.parent)
    return SourceData(df, classes, f"csv:{manifest_path.name}", root=manifest_path.parent.resolve())


def check_group_cells(df: pd.DataFrame, manifest_path: Path, group_column: str) -> None:
    """Check every row names its group before splits are assigned by it.

    A blank cell would make the split fall back to one group per image for *every* row, and
    patients would then leak across splits; the refusal names the rows (1-based data rows,
    as a spreadsheet shows them after its header) and what to do. A manifest with no
    grouping column at all passes (each image is its own group).

    Args:
        df: the manifest (``image_id`` column).
        manifest_path: the CSV file, named in the error.
        group_column: the grouping column (already copied to ``patient_id`` when present).

    Raises:
        ManifestError: the grouping column has empty cells (the first 10 rows listed).
    """
    column = group_column if group_column in df.columns else "patient_id"
    if column not in df.columns:
        return  # no grouping column at all: each image is its own group (documented)
    grouping = df["patient_id"] if "patient_id" in df.columns else df[column]
    blank = np.flatnonzero(grouping.isna().to_numpy() | (grouping.astype(str).str.strip() == ""))
    if len(blank):
        shown = ", ".join(f"row {i + 1} (image_id={df['image_id'].iloc[i]})" for i in blank[:10])
        more = f" and {len(blank) - 10} more" if len(blank) > 10 else ""
        raise ManifestError(
            f"{manifest_path}: column '{column}': {len(blank)} empty cell(s): {shown}{more}. "
            f"Splits are assigned by '{column}' so that no group is in two splits; fill these "
            "cells (a unique value per image if each is its own group), or give a 'split' column"
        )


def from_medmnist(npz_path: str | Path, class_names: list[str] | None = None) -> SourceData:
    """Build a source from a MedMNIST ``.npz``; its own train/val/test split is kept.

    Each image is its own patient. Image ids are ``<stem>-<split>-<i:05d>``; images are
    materialised as ``images/<split>/<id>.png``.

    Args:
        npz_path: the ``.npz`` with ``{train,val,test}_{images,labels}``.
        class_names: the model's classes (default: the sorted label indices found, as text).

    Returns:
        The validated manifest with its uint8 images (N, H, W) or (N, H, W, 3).

    Raises:
        ManifestError: the file is missing or not an ``.npz`` of plain arrays, a key is
            missing, images or labels have an unsupported dtype or shape, counts or shapes
            disagree between keys and splits, or the manifest fails validation.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise ManifestError(f"{npz_path}: MedMNIST file not found")
    try:
        npz = np.load(npz_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # not an npz, or object arrays
        raise ManifestError(f"{npz_path}: cannot read as a .npz of arrays ({exc})") from exc
    with npz:
        missing = [
            f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz
        ]
        if missing:
            raise ManifestError(f"{npz_path}: missing key(s) {missing}")
        parts = {
            s: (
                npz_images(npz[f"{s}_images"], f"{npz_path}: key '{s}_images'"),
                npz_labels(npz[f"{s}_labels"], f"{npz_path}: key '{s}_labels'"),
            )
            for s in SPLITS
        }
    for split, (images, labels) in parts.items():
        if len(images) != len(labels):
            raise ManifestError(
                f"{npz_path}: {split}_images has {len(images)} rows but {split}_labels has {len(labels)}"
            )
    shapes = {split: images.shape[1:] for split, (images, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise ManifestError(f"{npz_path}: the splits' images differ in shape: {shapes}")
    stem = npz_path.stem
    frames = []
    for split, (images, labels) in parts.items():
        ids = [f"{stem}-{split}-{i:05d}" for i in range(len(images))]
        frames.append(
            pd.DataFrame(
                {
                    "image_id": ids,
                    "path": [f"images/{split}/{i}.png" for i in ids],
                    "label": [str(int(v)) for v in labels],
                    "split": split,
                    "patient_id": ids,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    arrays = np.concatenate([parts[s][0] for s in SPLITS])
    df, classes = clean_manifest(df, str(npz_path), class_names)
    return SourceData(df, classes, f"medmnist:{npz_path.name}", arrays=arrays)


def npz_images(images: np.ndarray, where: str) -> np.ndarray:
    """Check MedMNIST images and bring them to uint8 (N, H, W) grey or (N, H, W, 3) colour.

    (N, H, W, 1) is squeezed to grey. A last axis of any other length (MedMNIST 3-D sets
    are (N, 28, 28, 28)) or a 5-D array is a volume or another layout: refused, never
    guessed.

    Args:
        images: the array under a ``*_images`` key.
        where: file and key, named in the error.

    Returns:
        ``images`` (a view; squeezed when it had one channel).

    Raises:
        ManifestError: not uint8 (0..255), or a shape other than (N, H, W), (N, H, W, 1) or
            (N, H, W, 3).
    """
    if images.dtype != np.uint8:
        raise ManifestError(f"{where}: images must be uint8 (0..255), got {images.dtype}")
    if images.ndim == 3:
        return images
    if images.ndim == 4:
        if images.shape[-1] == 1:
            return images[..., 0]
        if images.shape[-1] == 3:
            return images
        raise ManifestError(
            f"{where}: shape {images.shape}: the last axis must be 1 (grey) or 3 (RGB); "
            "a longer one is a 3-D volume (N, D, H, W) or a channels-first layout. 3-D volumes "
            "are not supported: give 2-D images (N, H, W) or (N, H, W, 1|3)"
        )
    if images.ndim < 3:
        raise ManifestError(f"{where}: shape {images.shape}: expected images (N, H, W[, C])")
    raise ManifestError(
        f"{where}: shape {images.shape}: 3-D volumes and image stacks are not supported; give "
        "2-D images (N, H, W) or (N, H, W, 1|3)"
    )


def npz_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Check MedMNIST labels and flatten them to integer class indices (N,).

    Args:
        labels: the array under a ``*_labels`` key, (N,) or (N, 1); whole-number floats
            are accepted.
        where: file and key, named in the error.

    Returns:
        int64 array (N,) of class indices >= 0.

    Raises:
        ManifestError: multi-label targets (N, K > 1), more than 2 dimensions, non-integer
            values, or a negative index.
    """
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ManifestError(
            f"{where}: multi-label targets {labels.shape} are not supported: one class per "
            "image, (N,) or (N, 1)"
        )
    if labels.ndim > 2:
        raise ManifestError(f"{where}: labels must be (N,) or (N, 1), got {labels.shape}")
    flat = labels.reshape(-1)
    numeric = flat.dtype.kind in "iub" or (flat.dtype.kind == "f" and np.all(np.mod(flat, 1) == 0))
    if not numeric:
        raise ManifestError(f"{where}: labels must be integer class indices, got {flat.dtype}")
    if len(flat) and flat.min() < 0:
        raise ManifestError(f"{where}: labels must be class indices >= 0, found {flat.min()}")
    return flat.astype(np.int64)


def from_demo(val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> SourceData:
    """Build the embedded demo source with patient-grouped, label-stratified splits.

    Args:
        val_fraction: share of rows for validation, in (0, 1).
        test_fraction: share of rows for test, in (0, 1).
        seed: seed of the simulated devices and patients, and of the splits.

    Returns:
        The 1,797 digits (uint8 (N, 28, 28)) with their manifest and class names ``0``-``9``.

    Raises:
        ValueError: split fractions out of range.
    """
    df, arrays = demo_source(seed)
    df = assign_splits(df, val_fraction, test_fraction, seed, "patient_id")
    df.insert(1, "path", [f"images/{i}.png" for i in df["image_id"]])
    df, classes = clean_manifest(df, "demo", None)
    return SourceData(df, classes, "demo:sklearn-digits", arrays=arrays)


def load_source(cfg: dict[str, Any]) -> SourceData:
    """Build the source named by a ``data`` params section (``source: demo|medmnist|csv``).

    Args:
        cfg: the ``data`` section (``source``, ``path``, ``class_names``, ``val_fraction``,
            ``test_fraction``, ``seed``, ``group_column``).

    Returns:
        The validated source.

    Raises:
        ValueError: an unknown source, no ``path`` for a file source, or split fractions out
            of range.
        ManifestError: the file source is unreadable or invalid.
    """
    kind = cfg.get("source", "demo")
    split_args = {
        "val_fraction": float(cfg.get("val_fraction", 0.15)),
        "test_fraction": float(cfg.get("test_fraction", 0.2)),
        "seed": int(cfg.get("seed", 0)),
    }
    class_names = cfg.get("class_names")
    if kind == "demo":
        return from_demo(**split_args)
    if kind == "medmnist":
        return from_medmnist(_required(cfg, "path"), class_names)
    if kind == "csv":
        return from_csv(
            _required(cfg, "path"),
            class_names,
            group_column=cfg.get("group_column", "patient_id"),
            **split_args,
        )
    raise ValueError(f"data.source: unknown source '{kind}'; expected demo, medmnist or csv")


def _required(cfg: dict[str, Any], key: str) -> str:
    if not cfg.get(key):
        raise ValueError(f"data.{key} is required for source '{cfg.get('source')}'")
    return str(cfg[key])
