"""Reading images into model-ready tensors, in memory or streamed, with MONAI transforms.

Every image becomes a float32 tensor shaped (C, H, W) with values in [0, 1]: the unlearning
method perturbs pixels in that space, and each model normalises its input itself. Small
datasets are decoded once and held in memory; ones larger than a budget are streamed from
disk so a big clinical export never has to fit in RAM.

Decoding (:mod:`medunlearn.data.decode`; Pillow for PNG/JPEG/BMP/TIFF, pydicom for DICOM),
then MONAI's ``Resize`` to the model's square size ("area" when shrinking, bilinear when
enlarging). C is the model's ``channels`` (1 or 3): grey is copied to three channels;
colour becomes one channel by ITU-R 601-2 luma (Pillow's ``convert("L")`` weights).

=====================================  ==============================================  =========
File / mode                            Mapping to [0, 1]                               Colour
=====================================  ==============================================  =========
PNG/JPEG/BMP/TIFF ``L`` (8-bit grey)   value / 255                                     grey
``1`` (bi-level)                       Pillow ``convert("L")``: 0 -> 0, 1 -> 1         grey
``I;16`` (16-bit grey PNG/TIFF)        value / 65535 (the file's 16-bit sample         grey
                                       depth; a 12-bit detector exported unscaled
                                       spans [0, 1/16] and is flagged by validation)
``LA`` (grey + alpha)                  the grey band / 255; alpha (coverage) dropped   grey
``RGB``, ``RGBA``/``RGBX``             value / 255; alpha dropped (a 16-bit RGB PNG     colour
                                       arrives as 8-bit RGB: Pillow reduces it)
``P``/``PA`` (palette)                 the palette *colours* (Pillow ``convert``)/255  colour
``CMYK``, ``YCbCr``, ``LAB``, ``HSV``  Pillow ``convert("RGB")`` / 255                 colour
DICOM ``MONOCHROME2``                  Modality LUT (Rescale Slope/Intercept or LUT)   grey
                                       -> VOI LUT (a checked lookup: pydicom 3.0
                                       wraps 8-bit tables), else the first window
                                       (pydicom ``apply_voi_lut``; what the reader
                                       was shown) -> scaled by the output
                                       range (the stored bits' range after rescale,
                                       or the VOI LUT's bit depth)
DICOM ``MONOCHROME1``                  as MONOCHROME2, then inverted (1 - x): its      grey
                                       minimum is white, so both polarities agree
DICOM ``RGB``, ``YBR_*``               pydicom converts YBR to RGB; / (2^BitsStored-1)  colour
DICOM ``PALETTE COLOR``                pydicom ``apply_color_lut``; / the LUT depth    colour
=====================================  ==============================================  =========

Refused, each with a :class:`~medunlearn.data.decode.DecodeError` (a ``ManifestError``)
naming the file (the dataset adds the manifest row): 32-bit integer (``I``) and float
(``F``) images (no defined intensity range), other Pillow modes, other photometric
interpretations, multi-frame files and 3-D volumes (one 2-D image per file), and files
neither library can read. ``.npz`` arrays are checked in :mod:`medunlearn.data.sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import Resize
from torch.utils.data import Dataset

from medunlearn.data.decode import decode_file
from medunlearn.data.manifest import ManifestError, resolve_paths


@dataclass(frozen=True)
class ImageSpec:
    """What the model consumes: square ``size`` pixels and ``channels`` (1 or 3)."""

    size: int
    channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, size, size)``: one image's tensor shape."""
        return (self.channels, self.size, self.size)

    def nbytes(self, n_images: int) -> int:
        """Memory needed to hold ``n_images`` as float32.

        Args:
            n_images: number of images.

        Returns:
            Bytes: ``n_images * channels * size * size * 4``.
        """
        return n_images * self.channels * self.size * self.size * 4


class ImageLoader:
    """Decode one image file to a (C, H, W) tensor in [0, 1] at the spec's size.

    See the module docstring for every accepted format. Shrinking uses MONAI's ``Resize``
    with "area" (no aliasing), enlarging bilinear; a refusal names the file.

    Args:
        spec: the model's input (square size in pixels, channels 1 or 3).
    """

    def __init__(self, spec: ImageSpec):
        self.spec = spec
        # "area" averages when shrinking (no aliasing, no dark borders from a padded blur);
        # bilinear when enlarging, where "area" would degrade to nearest-neighbour.
        self._shrink = Resize(spatial_size=(spec.size, spec.size), mode="area")
        self._enlarge = Resize(spatial_size=(spec.size, spec.size), mode="bilinear")

    def __call__(self, path: str | Path) -> torch.Tensor:
        """Decode and resize one image file.

        Args:
            path: the image file (PNG/JPEG/BMP/TIFF by suffix, anything else as DICOM).

        Returns:
            float32 tensor (C, size, size), contiguous, clamped to [0, 1].

        Raises:
            DecodeError: the file cannot be decoded or is refused (a ``ManifestError``
                naming the file; :func:`medunlearn.data.decode.decode_file`).
        """
        image = torch.from_numpy(decode_file(path, self.spec.channels))
        if tuple(image.shape[1:]) == (self.spec.size, self.spec.size):
            return image.clamp_(0, 1).contiguous()
        resize = self._shrink if image.shape[1] >= self.spec.size else self._enlarge
        return torch.as_tensor(resize(image)).clamp_(0, 1).contiguous()


class LabelledImages(Dataset):
    """(image, label index) pairs, held in memory or read from files on access.

    ``rows`` keeps the manifest rows in the same order, so results can be traced back to
    image ids (and cohorts can be selected) without reading images again. ``root`` and
    ``root_index`` record the set this one was cut from (:meth:`subset`), so inference can
    compute a split once and index every cohort cut from it.

    Args:
        rows: the manifest rows, one per image (index reset).
        labels: class indices (N,), stored as int64.
        images: decoded images (N, C, H, W) float32 in [0, 1], or ``None`` to stream.
        paths: the image files (N,), when streamed.
        loader: decodes one file, when streamed.
        source: the manifest's name, used in errors.

    Raises:
        ValueError: neither ``images`` nor both ``paths`` and ``loader`` are given.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        labels: torch.Tensor,
        images: torch.Tensor | None = None,
        paths: Sequence[Path] | None = None,
        loader: ImageLoader | None = None,
        source: str = "manifest",
    ):
        if images is None and (paths is None or loader is None):
            raise ValueError("give either images or paths and a loader")
        self.rows = rows.reset_index(drop=True)
        self.labels = labels.long()
        self.images = images
        self.paths = list(paths) if paths is not None else None
        self.loader = loader
        self.source = source
        # provenance: the set this one was cut from and its rows' positions there, so
        # inference can compute a split once and index every cohort cut from it
        self.root: LabelledImages = self
        self.root_index: np.ndarray | None = None  # None: every row of root, in order

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        """Whether the images are decoded in memory (else read from files on access)."""
        return self.images is not None

    def image(self, index: int) -> torch.Tensor:
        """Return one image, decoding it from its file when streamed.

        Args:
            index: position in this set (0-based).

        Returns:
            float32 tensor (C, H, W) in [0, 1].

        Raises:
            ManifestError: a streamed file does not decode (naming the manifest, the 1-based row
                and the image id).
        """
        if self.images is not None:
            return self.images[index]
        assert self.paths is not None and self.loader is not None
        try:
            return self.loader(self.paths[index])
        except ManifestError as exc:
            raise ManifestError(
                f"{self.source}: row {index + 1} (image_id={self.rows['image_id'].iloc[index]}): {exc}"
            ) from exc

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), self.labels[index]

    def subset(self, mask: np.ndarray | pd.Series) -> LabelledImages:
        """Return the rows where ``mask`` is true, sharing decoded images (no copy of the files).

        Args:
            mask: boolean (N,) over this set's rows.

        Returns:
            A new set in this set's row order, remembering its root set and positions there.
        """
        keep = np.flatnonzero(np.asarray(mask, dtype=bool))
        index = torch.as_tensor(keep, dtype=torch.long)
        sub = LabelledImages(
            rows=self.rows.iloc[keep],
            labels=self.labels[index],
            images=self.images[index] if self.images is not None else None,
            paths=[self.paths[i] for i in keep] if self.paths is not None else None,
            loader=self.loader,
            source=self.source,
        )
        sub.root = self.root
        sub.root_index = keep if self.root_index is None else self.root_index[keep]
        return sub

    def all_images(self) -> torch.Tensor:
        """Return every image as one tensor (decodes streamed datasets: small ones only).

        Returns:
            float32 (N, C, H, W) in [0, 1]; the stored tensor itself when in memory, an empty
            tensor for an empty streamed set.

        Raises:
            ManifestError: a streamed file does not decode.
        """
        if self.images is not None:
            return self.images
        return (
            torch.stack([self.image(i) for i in range(len(self))]) if len(self) else torch.empty(0)
        )


def label_indices(labels: pd.Series, class_names: Sequence[str]) -> torch.Tensor:
    """Map label text to class indices, in the order of ``class_names``.

    Args:
        labels: label of each row (compared as text).
        class_names: the model's classes; index ``i`` is ``class_names[i]``.

    Returns:
        int64 tensor (N,).

    Raises:
        KeyError: a label is not among ``class_names`` (manifests are validated first).
    """
    lookup = {str(name): i for i, name in enumerate(class_names)}
    return torch.as_tensor([lookup[str(v)] for v in labels], dtype=torch.long)


def open_images(
    rows: pd.DataFrame,
    root: Path,
    class_names: Sequence[str],
    spec: ImageSpec,
    max_in_memory_mb: float = 1024,
    source: str = "manifest",
) -> LabelledImages:
    """Open the images of ``rows``: decoded into memory if they fit the budget, else streamed.

    Every path is checked first (exists, inside ``root``), so a streamed dataset fails at
    once on a missing file rather than mid-epoch; undecodable files fail with file and row.

    Args:
        rows: manifest rows (``path``, ``label``, ``image_id``).
        root: folder the paths are relative to; a path may not escape it.
        class_names: the model's classes (label order).
        spec: the model's input (square size, channels).
        max_in_memory_mb: decode into memory when ``spec.nbytes(len(rows))`` is at most this
            many MiB (float32), else stream from disk.
        source: the manifest's name, used in errors.

    Returns:
        The images (C, size, size) float32 in [0, 1] with their labels.

    Raises:
        ManifestError: a path escapes ``root`` or is missing, or (in memory) a file does not
            decode; messages name the manifest, row and file.
    """
    rows = rows.reset_index(drop=True)
    paths = resolve_paths(rows, root, source)
    labels = label_indices(rows["label"], class_names)
    loader = ImageLoader(spec)
    if spec.nbytes(len(rows)) > max_in_memory_mb * 2**20:
        return LabelledImages(rows, labels, paths=paths, loader=loader, source=source)
    images = torch.empty((len(rows), *spec.shape), dtype=torch.float32)
    for i, path in enumerate(paths):
        try:
            images[i] = loader(path)
        except ManifestError as exc:
            raise ManifestError(
                f"{source}: row {i + 1} (image_id={rows['image_id'].iloc[i]}): {exc}"
            ) from exc
    return LabelledImages(rows, labels, images=images, source=source)
