"""Trained models of a benchmark scenario, cached on disk under a key of what determines them.

A benchmark needs many full trainings: the deployed model, the retrain reference, and the
reference models of the likelihood-ratio audit and of the gate calibration (each a retrain
without the forget cohort, another seed). They cost minutes each, so they are trained once
and kept as weights-only checkpoints. The key covers the dataset (its settings and the
materialised manifest's bytes), the architecture, the training recipe, the seed, the exact
training and validation rows (sorted image ids), their decoded pixels and labels, and the
code that trains on them (:func:`training_code_hash`): same key, same inputs. Decoders
(``medunlearn/data`` apart from the dataset class and the augmentation) are covered by the
pixels they produce rather than by their source, so a fix that leaves every pixel as it was
does not throw away hours of trainings, and one that changes a pixel retrains. A checkpoint
that does not load is retrained, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from medunlearn.data import augment, batches, images
from medunlearn.data.images import LabelledImages
from medunlearn.models import ZooModel, build_model
from medunlearn.models.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    save_checkpoint,
)
from medunlearn.models.training import TrainConfig, train_classifier
from medunlearn.versioning import source_hash

# what trains a bank model: the loop, the architectures, the device and dtype choice, and
# the evaluation that picks the epoch (not the checkpoint format, export or this bank)
TRAINING_SOURCES = (
    "models/training.py",
    "models/zoo.py",
    "models/base.py",
    "models/allcnn.py",
    "models/device.py",
    "models/inference.py",
    "models/evaluation.py",
)


def training_code_hash() -> str:
    """Hash the code that trains a bank model.

    That is the training core (:data:`TRAINING_SOURCES`) and the source of the dataset class,
    the batching and the augmentation (what turns decoded pixels into batches).

    Returns:
        The first 16 hex digits of the SHA-256.
    """
    import inspect

    digest = hashlib.sha256(source_hash(parts=TRAINING_SOURCES).encode())
    for obj in (images.LabelledImages, augment, batches):
        digest.update(inspect.getsource(obj).encode())
    return digest.hexdigest()[:16]


def pixels_hash(images: LabelledImages) -> str:
    """Hash a set's decoded images and labels, in row order.

    Args:
        images: the set; a streamed one is decoded (small sets only).

    Returns:
        The first 16 hex digits of the SHA-256 of the float32 images (N, C, H, W) and int64
        labels (N,).
    """
    digest = hashlib.sha256()
    digest.update(images.all_images().float().contiguous().numpy().tobytes())
    digest.update(images.labels.numpy().astype("int64").tobytes())
    return digest.hexdigest()[:16]


def rows_hash(images: LabelledImages) -> str:
    """Hash the sorted image ids of a set: which rows trained a model.

    Args:
        images: the set (``rows['image_id']``).

    Returns:
        The first 16 hex digits of the SHA-256.
    """
    ids = sorted(images.rows["image_id"].astype(str))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


class ModelBank:
    """Cached trainings of one scenario's architecture and recipe.

    Checkpoints are ``<cache_dir>/<key>.pt`` (:meth:`key`).

    Args:
        cache_dir: folder of the checkpoints.
        model: ``{"name": architecture, "kwargs": {...}}``.
        recipe: the ``train`` settings (:class:`~medunlearn.models.training.TrainConfig`
            fields; the seed is set per model).
        class_names: the model's classes.
        channels: input channels (1 or 3).
        image_size: square input size, pixels.
        dataset_dir: the materialised dataset the splits come from (its manifest's bytes
            enter every key).
        read_only: raise ``LookupError`` for a model the bank does not hold instead of
            training it (hours).

    Raises:
        OSError: the dataset's ``manifest.csv`` cannot be read.
    """

    def __init__(
        self,
        cache_dir: Path,
        model: dict[str, Any],
        recipe: dict[str, Any],
        class_names: list[str],
        channels: int,
        image_size: int,
        dataset_dir: Path,
        read_only: bool = False,
    ):
        self.cache_dir = Path(cache_dir)
        self.read_only = read_only
        self.model = dict(model)
        self.recipe = dict(recipe)
        self.class_names = list(class_names)
        self.channels = channels
        self.image_size = image_size
        manifest = Path(dataset_dir) / "manifest.csv"
        self.data_hash = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
        self.code_hash = training_code_hash()
        self._pixels: dict[int, tuple[LabelledImages, str]] = {}

    def _pixels_of(self, images: LabelledImages) -> str:
        if id(images) not in self._pixels:  # the set is kept so its id is not reused
            self._pixels[id(images)] = (images, pixels_hash(images))
        return self._pixels[id(images)][1]

    def key(self, train: LabelledImages, val: LabelledImages, seed: int) -> str:
        """Compute the cache key of a training.

        Args:
            train: the training images.
            val: the validation images (picks the best epoch).
            seed: the training's seed.

        Returns:
            20 hex digits of the SHA-256 of the data hash, model, recipe and seed, the row and
            pixel hashes of both sets, the training code's hash and the input shape.
        """
        blob = {
            "data": self.data_hash,
            "model": self.model,
            "recipe": {**self.recipe, "seed": seed},
            "train_rows": rows_hash(train),
            "val_rows": rows_hash(val),
            "pixels": [self._pixels_of(train), self._pixels_of(val)],
            "code": self.code_hash,
            "shape": [self.channels, self.image_size],
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[
            :20
        ]

    def get(
        self, train: LabelledImages, val: LabelledImages, seed: int, role: str = "model"
    ) -> tuple[ZooModel, dict[str, float | None], bool]:
        """Return the model trained on ``train`` (best epoch on ``val``) with ``seed``.

        A cached checkpoint is loaded; one that does not load (or lacks its cost) is retrained
        and overwritten atomically.

        Args:
            train: the training images.
            val: the validation images.
            seed: the training's seed (initial weights, shuffling, augmentation).
            role: what the model is for (``model``, ``retrain``, ...), recorded in the checkpoint
                and named in errors.

        Returns:
            ``(model, cost, cached)``: the model on the CPU in eval mode; ``cost`` holds the
            original training's wall ``seconds`` and process ``cpu_seconds`` (all threads;
            ``None`` for models cached before it was recorded), also when the model comes from
            the cache, so ``t/retrain`` stays meaningful (CPU time is immune to other work
            sharing the machine); ``cached`` says whether it was loaded.

        Raises:
            LookupError: a read-only bank does not hold the model.
        """
        path = self.cache_dir / f"{self.key(train, val, seed)}.pt"
        if path.is_file():
            try:
                model, meta = load_checkpoint(path)
                cost = {
                    "seconds": float(meta.extra["seconds"]),
                    "cpu_seconds": meta.extra.get("cpu_seconds"),
                }
                return model, cost, True
            except (CheckpointError, KeyError):
                pass  # unreadable or foreign: retrain and overwrite atomically
        if self.read_only:
            raise LookupError(
                f"{path}: the bank holds no {role} model (seed {seed}) for these inputs; "
                "fill it first (medunlearn bench --models-only)"
            )
        model = build_model(
            self.model["name"],
            len(self.class_names),
            self.channels,
            self.image_size,
            seed=seed,
            **self.model.get("kwargs", {}),
        )
        cfg = TrainConfig.from_params({**self.recipe, "seed": seed})
        start, cpu = time.perf_counter(), time.process_time()
        model = train_classifier(model, train, val, self.class_names, cfg).model
        cost = {
            "seconds": round(time.perf_counter() - start, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
        }
        meta = CheckpointMeta.for_model(
            model, self.class_names, self.image_size, extra={**cost, "role": role, "seed": seed}
        )
        save_checkpoint(path, model.cpu(), meta)
        return model.cpu().eval(), cost, False
