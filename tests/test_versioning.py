"""Ids and cache keys follow the data's content: a changed pixel is a different input."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from medunlearn.versioning import dataset_fingerprint


def test_mirroring_an_image_in_place_changes_the_fingerprint(tmp_path, demo_dir) -> None:
    """The manifest is byte-identical, one image is mirrored: the old key (manifest.csv
    only) said "same input"; the content fingerprint does not. A copy elsewhere with the
    same files keeps its fingerprint (it depends on content, not location)."""
    from tasks.export_onnx import revision_id

    copy = tmp_path / "copy"
    shutil.copytree(demo_dir, copy)
    assert dataset_fingerprint(copy) == dataset_fingerprint(demo_dir)
    manifest = (copy / "manifest.csv").read_bytes()
    image = sorted((copy / "images").rglob("*.png"))[0]
    pixels = np.asarray(Image.open(image))
    Image.fromarray(np.ascontiguousarray(pixels[:, ::-1])).save(image)
    assert (copy / "manifest.csv").read_bytes() == manifest
    assert dataset_fingerprint(copy) != dataset_fingerprint(demo_dir)
    same = revision_id("req", "model", dataset_fingerprint(demo_dir))
    assert revision_id("req", "model", dataset_fingerprint(copy)) != same
