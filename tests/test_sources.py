"""Sources (demo, MedMNIST, CSV + images) converted to manifests, and image loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medunlearn.data import (
    ImageLoader,
    ImageSpec,
    ManifestError,
    from_csv,
    from_demo,
    from_medmnist,
    load_dataset,
    materialise,
    open_images,
    open_split,
)
from medunlearn.data.dataset import open_splits
from medunlearn.data.demo import DEVICES, demo_source


def test_demo_is_deterministic_and_devices_differ() -> None:
    a_df, a_img = demo_source(seed=0)
    b_df, b_img = demo_source(seed=0)
    assert np.array_equal(a_img, b_img) and a_df.equals(b_df)
    assert a_img.shape == (1797, 28, 28) and a_img.dtype == np.uint8
    # one device per patient, every device used, and each has its own intensity signature
    assert (a_df.groupby("patient_id")["device"].nunique() == 1).all()
    assert set(a_df["device"]) == {d.name for d in DEVICES}
    means = {d: a_img[a_df["device"] == d].mean() for d in a_df["device"].unique()}
    background = {d: np.median(a_img[a_df["device"] == d][:, 0, :]) for d in means}
    assert background["scanner_b"] > 40 > background["scanner_a"]  # offset 0.2 -> ~51 grey
    assert means["scanner_c"] < means["scanner_a"]  # gamma 1.8 darkens


def test_demo_splits_group_patients() -> None:
    source = from_demo()
    df = source.manifest
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    assert source.class_names == [str(i) for i in range(10)]
    assert df["split"].value_counts().to_dict() == {"train": 1150, "test": 359, "val": 288}


def test_materialised_demo_roundtrip(demo_dir) -> None:
    info, df = load_dataset(demo_dir)
    assert info.counts == {"train": 1150, "val": 288, "test": 359} and info.spec.shape == (
        1,
        28,
        28,
    )
    test = open_split(demo_dir, "test", info, df)
    assert test.in_memory and test.images.shape == (359, 1, 28, 28)
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    # pixels survive PNG exactly (uint8 -> /255)
    _, arrays = demo_source(seed=0)
    first = test.rows["image_id"].iloc[0]
    index = int(first.split("-")[1])
    assert torch.allclose(
        test.images[0, 0], torch.as_tensor(arrays[index] / 255.0, dtype=torch.float32)
    )


def test_streamed_equals_in_memory(demo_dir) -> None:
    info, df = load_dataset(demo_dir)
    rows = df[df["split"] == "val"].head(40)
    memory = open_images(rows, demo_dir, info.class_names, info.spec, max_in_memory_mb=100)
    streamed = open_images(rows, demo_dir, info.class_names, info.spec, max_in_memory_mb=0)
    assert memory.in_memory and not streamed.in_memory
    assert torch.equal(memory.all_images(), streamed.all_images())
    assert torch.equal(memory.labels, streamed.labels)


def test_exclude_drops_train_and_val_rows_only(demo_dir) -> None:
    full = open_splits(demo_dir)
    retain = open_splits(demo_dir, exclude="label == '3'")
    assert (retain.train.labels != 3).all() and (retain.val.labels != 3).all()
    assert (retain.test.labels == 3).any()
    assert retain.excluded["train"] == int((full.train.labels == 3).sum())
    with pytest.raises(ValueError, match="bad row query"):
        open_splits(demo_dir, exclude="label ==")


def test_grey_to_rgb_and_resize(tmp_path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))).save(path)
    rgb = ImageLoader(ImageSpec(16, 3))(path)
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[0], rgb[2])
    row = rgb[0, 8]
    assert row[0] < 0.05 and row[-1] > 0.75  # the left-to-right ramp kept its orientation
    assert bool((row[1:] >= row[:-1]).all())


def test_dicom_is_scaled_by_its_stored_bits_not_per_image(tmp_path) -> None:
    """16 bits stored: p / 65535, so two exports of one scanner keep their relative
    brightness (per-image min-max scaling stretched every image to [0, 1])."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = np.arange(20 * 20, dtype=np.uint16).reshape(20, 20) * 3 + 1000
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    image = ImageLoader(ImageSpec(20, 1))(tmp_path / "x.dcm")
    assert image.shape == (1, 20, 20)
    expected = pixels / 65535.0  # rows stay rows
    assert torch.allclose(image[0], torch.as_tensor(expected, dtype=torch.float32), atol=1e-6)


def test_medmnist_retina(shared_data) -> None:
    source = from_medmnist(shared_data / "medmnist" / "retinamnist.npz")
    df = source.manifest
    assert df["split"].value_counts().to_dict() == {"train": 1080, "test": 400, "val": 120}
    assert source.class_names == ["0", "1", "2", "3", "4"]
    assert source.arrays.shape == (1600, 28, 28, 3)
    assert df["image_id"].is_unique and df["patient_id"].is_unique


def test_medmnist_missing_key(tmp_path) -> None:
    np.savez(tmp_path / "broken.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ManifestError, match=r"broken.npz: missing key\(s\) \['train_labels'"):
        from_medmnist(tmp_path / "broken.npz")


def medmnist_npz(path, images: dict, labels: dict | None = None):
    """An .npz with the three splits; ``images``/``labels`` map split -> array."""
    labels = labels or {k: np.arange(len(v)) % 2 for k, v in images.items()}
    arrays = {f"{k}_images": v for k, v in images.items()}
    arrays.update({f"{k}_labels": v for k, v in labels.items()})
    np.savez(path, **arrays)
    return path


def test_medmnist_grey_with_a_channel_axis_materialises(tmp_path) -> None:
    """(N, H, W, 1) is grey: it decodes to the same pixels as (N, H, W) (Pillow could not
    write it: 'Cannot handle this data type: (1, 1, 1), |u1')."""
    rng = np.random.default_rng(0)
    grey = {s: rng.integers(0, 256, (n, 8, 8), dtype=np.uint8) for s, n in SPLIT_SIZES.items()}
    plain = from_medmnist(medmnist_npz(tmp_path / "plain.npz", grey))
    axis = from_medmnist(
        medmnist_npz(tmp_path / "axis.npz", {k: v[..., None] for k, v in grey.items()})
    )
    np.testing.assert_array_equal(plain.arrays, axis.arrays)
    materialise(axis, tmp_path / "data" / "axis", image_size=8, channels=1)
    train = open_split(
        tmp_path / "data" / "axis", "train", *load_dataset(tmp_path / "data" / "axis")
    )
    np.testing.assert_allclose(train.all_images()[:, 0].numpy(), grey["train"] / 255.0, atol=1e-7)


SPLIT_SIZES = {"train": 6, "val": 4, "test": 4}


def test_medmnist_volumes_and_multilabel_targets_are_refused_by_key(tmp_path) -> None:
    volumes = {s: np.zeros((n, 28, 28, 28), np.uint8) for s, n in SPLIT_SIZES.items()}
    with pytest.raises(
        ManifestError,
        match=r"vol.npz: key 'train_images': shape \(6, 28, 28, 28\).*3-D volumes are not supported",
    ):
        from_medmnist(medmnist_npz(tmp_path / "vol.npz", volumes))
    images = {s: np.zeros((n, 8, 8), np.uint8) for s, n in SPLIT_SIZES.items()}
    multi = {s: np.zeros((n, 14), np.int64) for s, n in SPLIT_SIZES.items()}
    with pytest.raises(
        ManifestError,
        match=r"ml.npz: key 'train_labels': multi-label targets \(6, 14\) are not supported",
    ):
        from_medmnist(medmnist_npz(tmp_path / "ml.npz", images, multi))
    floats = {s: np.zeros((n, 8, 8), np.float32) for s, n in SPLIT_SIZES.items()}
    with pytest.raises(ManifestError, match=r"f.npz: key 'train_images': images must be uint8"):
        from_medmnist(medmnist_npz(tmp_path / "f.npz", floats))


def test_blank_group_cells_are_refused_by_row(shared_data, tmp_path) -> None:
    """Two blank lesion_id cells used to make the split group every row by image_id, and the
    product then rejected its own split ("17 patients leak across splits")."""
    src = shared_data / "ham10000_sites" / "manifest.csv"
    df = pd.read_csv(src, dtype=str)
    df.loc[[4, 9], "lesion_id"] = ""
    df["path"] = [str((src.parent / p).resolve()) for p in df["path"]]
    (tmp_path / "images").mkdir()
    path = tmp_path / "manifest.csv"
    df.to_csv(path, index=False)
    ids = df["image_id"]
    expected = (
        rf"manifest.csv: column 'lesion_id': 2 empty cell\(s\): row 5 \(image_id={ids[4]}\), "
        rf"row 10 \(image_id={ids[9]}\)\. Splits are assigned by 'lesion_id'"
    )
    with pytest.raises(ManifestError, match=expected):
        from_csv(path, group_column="lesion_id")


def generated_export(root, n: int = 12):
    """n 8x8 PNGs and a manifest without a split column (two lesions per label pair)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(
            {
                "image_id": f"im{i}",
                "path": f"img/{i}.png",
                "label": "ab"[i % 2],
                "lesion_id": f"L{i // 2}",
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("label", r"row 4 \(image_id=im3\), column 'label': empty value"),
        ("lesion_id", r"column 'lesion_id': 1 empty cell\(s\): row 4 \(image_id=im3\)"),
    ],
)
def test_blank_cells_before_split_assignment_are_named(tmp_path, column, expected) -> None:
    """An empty label crashed inside scikit-learn (float < str); an empty group cell made
    every row its own group. Both are refused by file, row and column."""
    df = generated_export(tmp_path)
    df.loc[3, column] = ""
    df.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(ManifestError, match=r"manifest.csv: " + expected):
        from_csv(tmp_path / "manifest.csv", group_column="lesion_id")


def test_malformed_npz_files_are_refused_by_key(tmp_path) -> None:
    images = {s: np.zeros((n, 8, 8), np.uint8) for s, n in SPLIT_SIZES.items()}
    text = {s: np.array(["a"] * n) for s, n in SPLIT_SIZES.items()}
    with pytest.raises(ManifestError, match=r"s.npz: key 'train_labels': labels must be integer"):
        from_medmnist(medmnist_npz(tmp_path / "s.npz", images, text))
    negative = {s: -np.ones(n, np.int64) for s, n in SPLIT_SIZES.items()}
    with pytest.raises(ManifestError, match=r"n.npz: key 'train_labels': .* >= 0, found -1"):
        from_medmnist(medmnist_npz(tmp_path / "n.npz", images, negative))
    sizes = {**images, "test": np.zeros((4, 9, 9), np.uint8)}
    with pytest.raises(ManifestError, match=r"z.npz: the splits' images differ in shape"):
        from_medmnist(medmnist_npz(tmp_path / "z.npz", sizes))
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ManifestError, match=r"x.npz: cannot read as a .npz"):
        from_medmnist(tmp_path / "x.npz")


def test_ham10000_split_by_lesion(shared_data, tmp_path) -> None:
    source = from_csv(shared_data / "ham10000_sites" / "manifest.csv", group_column="lesion_id")
    df = source.manifest
    assert len(df) == 689 and source.class_names == [
        "akiec",
        "bcc",
        "bkl",
        "df",
        "mel",
        "nv",
        "vasc",
    ]
    assert (df.groupby("lesion_id")["split"].nunique() == 1).all()
    assert {"device", "dx_type", "age", "localization"} <= set(df.columns)  # extra columns kept
    subset = df[df["device"] == "vienna_dias"].copy()
    subset["path"] = [str((shared_data / "ham10000_sites" / p).resolve()) for p in subset["path"]]
    images = open_images(
        subset.head(8), shared_data / "ham10000_sites", source.class_names, ImageSpec(64, 3)
    )
    assert images.images.shape == (8, 3, 64, 64) and 0.2 < float(images.images.mean()) < 0.9


def test_materialise_csv_copies_images_byte_for_byte(shared_data, tmp_path) -> None:
    source = from_csv(shared_data / "ham10000_sites" / "manifest.csv", group_column="lesion_id")
    info = materialise(source, tmp_path / "data" / "ham", image_size=32, channels=3)
    assert info.counts == source.manifest["split"].value_counts().to_dict() and info.n_groups == 689
    stored = pd.read_csv(tmp_path / "data" / "ham" / "manifest.csv")
    import hashlib

    for _, row in stored.sample(20, random_state=0).iterrows():
        data = (tmp_path / "data" / "ham" / row["path"]).read_bytes()
        assert hashlib.md5(data).hexdigest() == row["md5"]


def test_csv_paths_outside_the_export_are_refused(shared_data, tmp_path) -> None:
    manifest = pd.read_csv(shared_data / "ham10000_sites" / "manifest.csv").head(60)
    source = (shared_data / "ham10000_sites").resolve()
    manifest["path"] = [str(source / p) for p in manifest["path"]]  # absolute, elsewhere
    (tmp_path / "export").mkdir()
    manifest.to_csv(tmp_path / "export" / "manifest.csv", index=False)
    # paths now point outside the export folder: refused before anything is materialised
    # (that a refusal leaves data/ and models/ untouched is tested in test_flows.py)
    with pytest.raises(ManifestError, match="escapes the data root"):
        from_csv(tmp_path / "export" / "manifest.csv", group_column="lesion_id")
