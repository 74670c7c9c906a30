"""Reading images into model-ready tensors, in memory or streamed, with MONAI transforms.

Every image becomes a float32 tensor shaped (C, H, W) with values in [0, 1]: the unlearning
method perturbs pixels in that space, and each model normalises its input itself. Small
datasets are decoded once and held in memory; ones larger than a budget are streamed from
disk so a big clinical export never has to fit in RAM.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import PILReader, PydicomReader
from monai.transforms import Compose, LoadImage, RandAffine, RandFlip, Resize
from torch.utils.data import Dataset

from medunlearn.data.manifest import ManifestError, resolve_paths

# MONAI registers every reader it knows inside LoadImage, and warns about GPU decoders
# (nvImageCodec) and read-only numpy buffers on each call; neither concerns CPU decoding here.
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
warnings.filterwarnings("ignore", message="PydicomReader: ImageOrientationPatient")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageSpec:
    """What the model consumes: square ``size`` pixels and ``channels`` (1 or 3)."""

    size: int
    channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def nbytes(self, n_images: int) -> int:
        """Memory needed to hold ``n_images`` as float32."""
        return n_images * self.channels * self.size * self.size * 4


class ImageLoader:
    """Decode one image file (PNG/JPEG via Pillow, DICOM via pydicom) to a (C, H, W) tensor.

    Integer images are scaled by their type's maximum (uint8 -> /255); DICOM and float images
    are min-max scaled per image, since their stored range carries no fixed meaning.
    """

    def __init__(self, spec: ImageSpec):
        self.spec = spec
        self._pil = LoadImage(
            reader=PILReader(reverse_indexing=False),
            image_only=True,
            dtype=None,
            ensure_channel_first=True,
        )
        self._dicom: LoadImage | None = None  # built on first DICOM: pydicom setup is noisy
        # "area" averages when shrinking (no aliasing, no dark borders from a padded blur);
        # bilinear when enlarging, where "area" would degrade to nearest-neighbour.
        self._shrink = Resize(spatial_size=(spec.size, spec.size), mode="area")
        self._enlarge = Resize(spatial_size=(spec.size, spec.size), mode="bilinear")

    def _dicom_reader(self) -> LoadImage:
        if self._dicom is None:
            self._dicom = LoadImage(
                # swap_ij=False keeps DICOM rows as image rows, as PILReader does above.
                reader=PydicomReader(swap_ij=False),
                image_only=True,
                dtype=None,
                ensure_channel_first=True,
            )
        return self._dicom

    def __call__(self, path: str | Path) -> torch.Tensor:
        path = Path(path)
        is_pil = path.suffix.lower() in PIL_SUFFIXES
        try:
            image = (self._pil if is_pil else self._dicom_reader())(str(path))
        except Exception as exc:  # any decoder failure: name the file, keep the cause
            raise ManifestError(
                f"{path}: cannot decode image ({type(exc).__name__}: {exc})"
            ) from exc
        array = torch.as_tensor(np.array(image))
        if array.ndim == 4:  # a single-slice DICOM volume (C, H, W, 1)
            array = array[..., 0]
        if array.ndim != 3:
            raise ManifestError(f"{path}: expected a 2-D image, got shape {tuple(array.shape)}")
        if is_pil and not array.dtype.is_floating_point:
            scaled = array.float() / float(torch.iinfo(array.dtype).max)
        else:
            array = array.float()
            lo, hi = array.min(), array.max()
            scaled = (array - lo) / (hi - lo) if hi > lo else torch.zeros_like(array)
        image = to_channels(scaled, self.spec.channels)
        if tuple(image.shape[1:]) == (self.spec.size, self.spec.size):
            return image.clamp_(0, 1).contiguous()
        resize = self._shrink if image.shape[1] >= self.spec.size else self._enlarge
        return torch.as_tensor(resize(image)).clamp_(0, 1).contiguous()


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Map a (C, H, W) image to ``channels``: drop alpha, grey->RGB by copying, RGB->grey by mean."""
    if image.shape[0] == 4:
        image = image[:3]
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1:
        return image.expand(channels, *image.shape[1:]).clone()
    if channels == 1:
        return image.mean(dim=0, keepdim=True)
    raise ValueError(f"cannot map {image.shape[0]} channels to {channels}")


def augmentation(
    size: int, flip: bool = False, rotate_deg: float = 0.0, shift: float = 0.0, seed: int = 0
) -> Compose | None:
    """Seeded MONAI augmentation for ``size``-pixel training images, or ``None`` if all off.

    ``shift`` is a fraction of the image side. Flips are opt-in: harmless for fundus or skin
    images, but they turn one digit, or one side of a chest, into another.
    """
    steps: list = []
    if flip:
        steps.append(RandFlip(prob=0.5, spatial_axis=1))
    if rotate_deg or shift:
        steps.append(
            RandAffine(
                prob=1.0,
                rotate_range=(np.deg2rad(rotate_deg),),
                translate_range=(shift * size, shift * size),
                padding_mode="zeros",
                cache_grid=False,
            )
        )
    if not steps:
        return None
    compose = Compose(steps)
    compose.set_random_state(seed=seed)
    return compose


class LabelledImages(Dataset):
    """(image, label index) pairs, held in memory or read from files on access.

    ``rows`` keeps the manifest rows in the same order, so results can be traced back to
    image ids (and cohorts can be selected) without reading images again.
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
        self.transform: Callable[[torch.Tensor], torch.Tensor] | None = None
        # provenance: the set this one was cut from and its rows' positions there, so
        # inference can compute a split once and index every cohort cut from it
        self.root: LabelledImages = self
        self.root_index: np.ndarray | None = None  # None: every row of root, in order

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def image(self, index: int) -> torch.Tensor:
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
        image = self.image(index)
        if self.transform is not None:
            image = torch.as_tensor(self.transform(image)).float()
        return image, self.labels[index]

    def subset(self, mask: np.ndarray | pd.Series) -> LabelledImages:
        """The rows where ``mask`` is true, sharing decoded images (no copy of the files)."""
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
        if self.transform is None:
            sub.root = self.root
            sub.root_index = keep if self.root_index is None else self.root_index[keep]
        return sub

    def with_augmentation(self, transform: Compose | None) -> LabelledImages:
        """A view of the same data that applies ``transform`` on access (training only)."""
        view = LabelledImages(
            self.rows, self.labels, self.images, self.paths, self.loader, self.source
        )
        view.transform = transform
        return view

    def all_images(self) -> torch.Tensor:
        """Every image as one (N, C, H, W) tensor (decodes streamed datasets: small ones only)."""
        if self.images is not None:
            return self.images
        return (
            torch.stack([self.image(i) for i in range(len(self))]) if len(self) else torch.empty(0)
        )


def label_indices(labels: pd.Series, class_names: Sequence[str]) -> torch.Tensor:
    """Label text -> class index, in the order of ``class_names``."""
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
