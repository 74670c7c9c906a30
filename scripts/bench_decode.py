"""Decoding throughput of the image loader, and the time to materialise the HAM10000 subset.

    python scripts/bench_decode.py [--n 200] [--threads 2] [--ham ../shared/data/ham10000_sites/manifest.csv]

Generates ``n`` files of each kind in a temporary folder (224x224 RGB JPEG, 224x224 16-bit
greyscale PNG, 224x224 16-bit MONOCHROME2 DICOM), decodes each with
``medunlearn.data.images.ImageLoader`` at ``image_size`` 64 (best of 3 passes; the first
file of each kind is decoded once before timing) and prints images per second, then times
``materialise`` of the HAM10000 subset (689 JPEGs: validation and the decode check of every
file, then the copy) into a temporary folder. Numbers go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medunlearn.data.dataset import materialise
from medunlearn.data.images import ImageLoader, ImageSpec
from medunlearn.data.sources import from_csv


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """An uncompressed 16-bit MONOCHROME2 DICOM (Explicit VR Little Endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def fixtures(folder: Path, n: int) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    out: dict[str, list[Path]] = {"jpeg_224_rgb": [], "png16_224": [], "dicom16_224": []}
    for i in range(n):
        rgb = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        p = folder / f"{i}.jpg"
        Image.fromarray(rgb).save(p, quality=90)
        out["jpeg_224_rgb"].append(p)
        grey16 = rng.integers(0, 65536, (224, 224), dtype=np.uint16)
        p = folder / f"{i}.png"
        Image.fromarray(grey16).save(p)
        out["png16_224"].append(p)
        p = folder / f"{i}.dcm"
        write_dicom(p, rng.integers(0, 4096, (224, 224)))
        out["dicom16_224"].append(p)
    return out


def throughput(files: list[Path], channels: int, repeats: int = 3) -> float:
    loader = ImageLoader(ImageSpec(64, channels))
    loader(files[0])  # reader set-up is not per image
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for f in files:
            loader(f)
        best = min(best, time.perf_counter() - start)
    return len(files) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ham", type=Path, default=Path("../shared/data/ham10000_sites/manifest.csv")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = fixtures(Path(tmp), args.n)
        for kind, paths in files.items():
            result[f"{kind}_images_per_s"] = round(throughput(paths, 3 if "rgb" in kind else 1), 1)
    if args.ham.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            source = from_csv(args.ham, group_column="lesion_id")
            materialise(source, Path(tmp) / "ham", 64, 3)
            result["ham_materialise_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
