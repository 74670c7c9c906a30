"""Manifest validation: each kind of bad input gives an error naming file, row and column,
and never overwrites a dataset already materialised."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medunlearn.data import ManifestError, assign_splits, from_csv, hash_identifier, materialise
from medunlearn.data.manifest import sort_labels


def write_png(path: Path, value: int = 128, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def make_export(root: Path, rows: int = 12, **overrides) -> Path:
    """A small clinical-style export: PNGs plus manifest.csv (patients never cross splits)."""
    splits = (
        ["train"] * (rows // 2) + ["val"] * (rows // 4) + ["test"] * (rows - rows // 2 - rows // 4)
    )
    records = []
    for i in range(rows):
        write_png(root / "img" / f"{i}.png", value=10 * i)
        records.append(
            {
                "image_id": f"im{i}",
                "path": f"img/{i}.png",
                "label": ["benign", "malignant"][i % 2],
                "split": splits[i],
                "patient_id": f"MRN{i}",
                "device": "scanner_x",
            }
        )
    df = pd.DataFrame(records)
    for column, value in overrides.items():
        if value is None:
            df = df.drop(columns=column)
        else:
            row, new = value
            df.loc[row, column] = new
    path = root / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            digest.update(f.relative_to(folder).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def existing_dataset(tmp_path: Path) -> Path:
    """A good dataset already under data/, which a failed run must leave untouched."""
    good = make_export(tmp_path / "good")
    target = tmp_path / "data" / "clinic"
    materialise(from_csv(good), target, image_size=16, channels=1)
    return target


def test_good_export_materialises(tmp_path: Path, existing_dataset: Path) -> None:
    df = pd.read_csv(existing_dataset / "manifest.csv")
    assert len(df) == 12 and set(df["split"]) == {"train", "val", "test"}
    assert (existing_dataset / "img" / "3.png").is_file()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"split": None}, None),  # no split column: splits are assigned, not an error
        ({"label": None}, r"missing required column\(s\) \['label'\]"),
        (
            {"split": (4, "training")},
            r"row 5 \(image_id=im4\), column 'split': unknown split 'training'",
        ),
        (
            {"path": (2, "img/missing.png")},
            r"row 3 \(image_id=im2\), column 'path': file not found",
        ),
        (
            {"path": (1, "../../outside.png")},
            r"row 2 \(image_id=im1\), column 'path': '../../outside.png' escapes the data root",
        ),
        ({"image_id": (3, "im0")}, r"row 4 \(image_id=im0\), column 'image_id': duplicate"),
        ({"label": (0, None)}, r"row 1 \(image_id=im0\), column 'label': empty value"),
    ],
)
def test_bad_manifest_names_row_and_column(tmp_path, existing_dataset, overrides, expected) -> None:
    before = folder_digest(existing_dataset)
    manifest = make_export(tmp_path / "bad", **overrides)
    if expected is None:
        materialise(
            from_csv(manifest, val_fraction=0.25, test_fraction=0.25),
            tmp_path / "data" / "other",
            16,
            1,
        )
        return
    with pytest.raises(ManifestError, match=expected) as err:
        materialise(from_csv(manifest), existing_dataset, image_size=16, channels=1)
    assert str(manifest) in str(err.value)
    assert folder_digest(existing_dataset) == before


def test_label_outside_class_list(tmp_path, existing_dataset) -> None:
    manifest = make_export(tmp_path / "bad", label=(6, "melanoma"))
    with pytest.raises(
        ManifestError,
        match=r"row 7 \(image_id=im6\), column 'label': 'melanoma' is not in the class list \['benign', 'malignant'\]",
    ):
        from_csv(manifest, class_names=["benign", "malignant"])


def test_empty_split(tmp_path, existing_dataset) -> None:
    df = pd.read_csv(make_export(tmp_path / "bad"))
    df.loc[df["split"] == "val", "split"] = "train"
    df.to_csv(tmp_path / "bad" / "manifest.csv", index=False)
    with pytest.raises(ManifestError, match="split 'val' has no rows"):
        from_csv(tmp_path / "bad" / "manifest.csv")


def test_patient_in_two_splits_is_refused_without_printing_the_id(
    tmp_path, existing_dataset
) -> None:
    before = folder_digest(existing_dataset)
    manifest = make_export(
        tmp_path / "bad", patient_id=(11, "MRN0")
    )  # row 12 is test, MRN0 is train
    with pytest.raises(ManifestError, match="appears in more than one split") as err:
        materialise(from_csv(manifest), existing_dataset, 16, 1)
    message = str(err.value)
    assert "MRN0" not in message and hash_identifier("MRN0") in message
    assert "train (row 1 (image_id=im0))" in message and "test (row 12 (image_id=im11))" in message
    assert folder_digest(existing_dataset) == before


def test_undecodable_image_names_file_and_row(tmp_path, existing_dataset) -> None:
    before = folder_digest(existing_dataset)
    manifest = make_export(tmp_path / "bad")
    (tmp_path / "bad" / "img" / "5.png").write_bytes(b"this is not a png")
    with pytest.raises(
        ManifestError, match=r"row 6 \(image_id=im5\), column 'path': .*5\.png: cannot decode image"
    ):
        materialise(from_csv(manifest), existing_dataset, 16, 1)
    assert folder_digest(existing_dataset) == before


def test_assigned_splits_keep_patients_together_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "label": rng.choice(["a", "b", "c"], n),
            "patient_id": [f"p{i // 3}" for i in range(n)],
        }
    )
    a = assign_splits(df, 0.15, 0.2, seed=1)
    b = assign_splits(df, 0.15, 0.2, seed=1)
    c = assign_splits(df, 0.15, 0.2, seed=2)
    assert (a["split"] == b["split"]).all() and not (a["split"] == c["split"]).all()
    assert (a.groupby("patient_id")["split"].nunique() == 1).all()
    share = a["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.2, abs=0.05) and share["val"] == pytest.approx(
        0.15, abs=0.05
    )
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert set(a.loc[a["split"] == split, "label"]) == {"a", "b", "c"}


def test_sort_labels_numeric_then_text() -> None:
    assert sort_labels(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_labels(["nv", "bcc", "mel"]) == ["bcc", "mel", "nv"]


def test_too_few_groups_to_split_is_a_clear_error(tmp_path) -> None:
    df = pd.DataFrame(
        {"image_id": ["a", "b", "c"], "label": ["x", "y", "x"], "patient_id": ["p", "p", "q"]}
    )
    with pytest.raises(ManifestError, match=r"only 2 groups \(patient_id\) to split"):
        assign_splits(df, 0.15, 0.2, seed=0)


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_manifest_with_another_delimiter_says_so(tmp_path, sep, name) -> None:
    """Issue 27: a semicolon-delimited export reported only a missing ``image_id``."""
    path = make_export(tmp_path)
    pd.read_csv(path).to_csv(path, sep=sep, index=False)
    with pytest.raises(ManifestError, match=rf"manifest.csv: one column .* delimited by {name}"):
        from_csv(path)
