"""Data layer: cohort manifests, sources (CSV, MedMNIST, demo), materialised datasets, images."""

from medunlearn.data.dataset import DatasetInfo, load_dataset, materialise, open_split
from medunlearn.data.images import ImageLoader, ImageSpec, LabelledImages, open_images
from medunlearn.data.manifest import (
    REQUIRED_COLUMNS,
    SPLITS,
    ManifestError,
    assign_splits,
    clean_manifest,
    hash_identifier,
)
from medunlearn.data.sources import SourceData, from_csv, from_demo, from_medmnist, load_source

__all__ = [
    "REQUIRED_COLUMNS",
    "SPLITS",
    "DatasetInfo",
    "ImageLoader",
    "ImageSpec",
    "LabelledImages",
    "ManifestError",
    "SourceData",
    "assign_splits",
    "from_csv",
    "from_demo",
    "from_medmnist",
    "hash_identifier",
    "load_dataset",
    "load_source",
    "materialise",
    "open_images",
    "open_split",
    "clean_manifest",
]
