"""One image file to intensities in [0, 1], shaped (C, H, W), with the format's own library.

Pillow decodes PNG, JPEG, BMP and TIFF; pydicom decodes DICOM and applies its LUTs. Every
accepted mode and how it maps to [0, 1] and to the model's channel count is tabled in the
docstring of :mod:`medunlearn.data.images`; anything else is refused with a
:class:`DecodeError` naming the file and the reason.

Why not MONAI's ``LoadImage`` here: its ``PILReader`` hands over Pillow's raw array (palette
*indices*, the alpha band as a channel, bi-level images as booleans) and its
``PydicomReader`` applies neither the modality/VOI LUTs nor the MONOCHROME1 inversion. The
right mapping depends on the image mode or the photometric interpretation, which only the
file's own library exposes, so the decoding is done with Pillow and pydicom directly; MONAI
still resizes (``medunlearn.data.images.ImageLoader``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medunlearn.data.manifest import ManifestError
from medunlearn.settings import max_image_pixels

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# ITU-R 601-2 luma, the weights of Pillow's convert("L"): colour -> one channel
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
PIL_8BIT = {"1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
PIL_16BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
DICOM_GREY = {"MONOCHROME1", "MONOCHROME2"}
DICOM_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}
# Pillow's own size guard (a warning above its bound, an error at twice) would answer
# first for a large image and name no file; the header check here (``_too_large``, bound
# ``medunlearn.settings.max_image_pixels``) runs before any pixel is read instead
Image.MAX_IMAGE_PIXELS = None


def _too_large(path: Path, width: int, height: int) -> DecodeError | None:
    limit = max_image_pixels()
    if width * height <= limit:
        return None
    return DecodeError(
        f"{path}: {width} x {height} pixels, more than the {limit:,} decoded at most "
        "(data.max_image_pixels; a decompression bomb or a whole-slide image): export a "
        "downsampled image or raise the bound"
    )


class DecodeError(ManifestError):
    """An image file is refused: the message names the file and why."""


def decode_file(path: str | Path, channels: int) -> np.ndarray:
    """Decode an image file to intensities in [0, 1], with the format's own library.

    Files with a Pillow suffix (PNG, JPEG, BMP, TIFF) go to :func:`decode_pil`, anything
    else to :func:`decode_dicom`. No resizing: the image keeps its stored height and width.

    Args:
        path: the image file.
        channels: the model's channels: 1 (colour becomes ITU-R 601-2 luma) or 3 (grey is
            copied to three channels).

    Returns:
        float32 array (``channels``, H, W), C-contiguous, values in [0, 1].

    Raises:
        ValueError: ``channels`` is not 1 or 3.
        DecodeError: an unreadable file, an image above ``data.max_image_pixels``, an
            unsupported mode or photometric interpretation, or a multi-frame image/volume.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if path.suffix.lower() in PIL_SUFFIXES:
        return decode_pil(path, channels)
    return decode_dicom(path, channels)


def _to_channels(grey_or_rgb: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour in [0, 1] -> (channels, H, W)."""
    if grey_or_rgb.ndim == 2:
        grey = grey_or_rgb[None]
        return np.repeat(grey, 3, axis=0) if channels == 3 else grey
    if channels == 1:
        return (grey_or_rgb @ LUMA)[None].astype(np.float32)
    return grey_or_rgb.transpose(2, 0, 1)


def decode_pil(path: Path, channels: int) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF with Pillow (see the table in :mod:`medunlearn.data.images`).

    8-bit modes are divided by 255, 16-bit grey (``I;16*``) by 65535; alpha is dropped,
    palettes become their colours.

    Args:
        path: the image file.
        channels: 1 or 3 (see :func:`decode_file`).

    Returns:
        float32 array (``channels``, H, W) in [0, 1].

    Raises:
        DecodeError: the file cannot be read, is larger than the pixel bound, has several
            frames, or has a mode without a defined intensity range (``I``, ``F``, ...).
    """
    try:
        with Image.open(path) as im:
            too_large = _too_large(path, *im.size)
            if too_large is not None:
                raise too_large
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise DecodeError(
                    f"{path}: {frames} frames ({im.format}); multi-frame images and 3-D "
                    "volumes are not supported: export one 2-D image per file"
                )
            mode = im.mode
            if mode in PIL_16BIT:
                # the PNG/TIFF sample depth is 16 bits: 65535 is full intensity. A 12-bit
                # detector exported unscaled spans [0, 1/16]; validation flags its range.
                grey = np.asarray(im, dtype=np.float32) / 65535.0
                return np.ascontiguousarray(_to_channels(grey, channels))
            if mode not in PIL_8BIT:
                raise DecodeError(
                    f"{path}: image mode '{mode}' ({im.format}) is not supported: its "
                    "intensity range is not defined by the file (export 8- or 16-bit "
                    "greyscale or 8-bit colour)"
                )
            im.load()
            if mode == "LA":
                im = im.getchannel("L")  # alpha is coverage, not intensity: dropped
            elif mode == "1":
                im = im.convert("L")  # 0 -> 0, 1 -> 255
            elif mode != "L":
                # palette -> its colours; RGBA/RGBX/PA -> colour without alpha; CMYK,
                # YCbCr, LAB, HSV -> RGB by Pillow's own conversion
                im = im.convert("RGB")
                if channels == 1:
                    im = im.convert("L")  # ITU-R 601-2 luma
            array = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return np.ascontiguousarray(_to_channels(array, channels))


def _modality_range(ds, ordered: bool = True) -> tuple[float, float]:
    """Return the range of stored values after the Modality LUT.

    It is pydicom's output range for ``apply_windowing`` (PS3.3 C.11.1.1.1): the stored bits'
    range, rescaled when Rescale Slope/Intercept are present; a Modality LUT Sequence's own
    bit depth otherwise. ``ordered=False`` keeps pydicom's (y_min, y_max) order, which a
    negative slope swaps: its window output runs from y_min (below the window) to y_max
    (above it).
    """
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return (min(lo, hi), max(lo, hi)) if ordered else (lo, hi)


def _voi_lut(values: np.ndarray, ds) -> tuple[np.ndarray, float]:
    """Apply the first VOI LUT Sequence item to ``values``; also return the LUT's full value.

    PS3.3 C.11.2.1.2: inputs below the first mapped value take the first entry, above the
    last the last entry. The full output value is 2^bits - 1.

    Written here because pydicom 3.0's ``apply_voi`` indexes the table in the table's own
    dtype: an 8-bit LUT of more than 256 entries wraps its indexes modulo 256 (stored values
    0, 1000, 2000, 4095 came out as 0, 0.055, 0.051, 0.059).
    """
    item = ds.VOILUTSequence[0]
    entries, first, depth = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    element = item["LUTData"]
    if element.VR == "OW" and isinstance(element.value, bytes):
        little = ds.file_meta.TransferSyntaxUID.is_little_endian
        table = np.frombuffer(element.value, dtype="<u2" if little else ">u2")[:entries]
    else:
        table = np.asarray(element.value, dtype=np.int64).reshape(-1)[:entries]
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, len(table) - 1)
    return table[index].astype(np.float64), float(2**depth - 1)


def _grey(stored: np.ndarray, ds) -> np.ndarray:
    """Map stored grey values to [0, 1] by the PS3.4 grayscale pipeline.

    Modality LUT (rescale to physical units), then the VOI LUT or window the export carries
    (what the reader was shown), scaled by the output range.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if ds.get("VOILUTSequence"):
        values, top = _voi_lut(values, ds)
        lo, hi = 0.0, top
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), np.float64)
        lo, hi = _modality_range(ds, ordered=False)
    else:
        lo, hi = _modality_range(ds)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def decode_dicom(path: Path, channels: int) -> np.ndarray:
    """Decode a single-frame DICOM with pydicom (see the table in :mod:`medunlearn.data.images`).

    Grey images go through the PS3.4 pipeline (Modality LUT, then the VOI LUT or first
    window), scaled to [0, 1] by the output range; MONOCHROME1 is inverted. Colour images
    (RGB, YBR converted to RGB, palette colour) are divided by their bit depth's maximum.

    Args:
        path: the DICOM file.
        channels: 1 or 3 (see :func:`decode_file`).

    Returns:
        float32 array (``channels``, H, W) in [0, 1].

    Raises:
        DecodeError: not a readable DICOM, no pixel data, several frames, larger than the
            pixel bound (checked on the header, before decoding), an unsupported photometric
            interpretation, pixel data that does not decode (codec, truncation), invalid
            rescale/LUT/window attributes, or an unexpected array shape.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise DecodeError(
            f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})"
        ) from exc
    if "PixelData" not in ds:
        raise DecodeError(f"{path}: DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DecodeError(
            f"{path}: DICOM with {frames} frames; 3-D volumes and multi-frame series are not "
            "supported: export one 2-D image per file"
        )
    too_large = _too_large(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0))
    if too_large is not None:  # from the header, before the pixel data is decoded
        raise too_large
    interpretation = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if interpretation not in DICOM_GREY | DICOM_COLOUR | {"PALETTE COLOR"}:
        raise DecodeError(
            f"{path}: DICOM photometric interpretation '{interpretation}' is not supported "
            f"(supported: {', '.join(sorted(DICOM_GREY | DICOM_COLOUR))}, PALETTE COLOR)"
        )
    try:
        stored = ds.pixel_array  # YBR_* arrive converted to RGB (pydicom's as_rgb default)
    except Exception as exc:  # a missing codec, truncated data: many exception types
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DecodeError(
            f"{path}: cannot decode DICOM pixel data (transfer syntax {syntax}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        if interpretation in DICOM_GREY:
            if stored.ndim != 2:
                raise DecodeError(f"{path}: expected a 2-D image, got shape {stored.shape}")
            grey = _grey(stored, ds)
            if interpretation == "MONOCHROME1":  # minimum value is white
                grey = 1.0 - grey
            return np.ascontiguousarray(_to_channels(grey.astype(np.float32), channels))
        if interpretation == "PALETTE COLOR":
            rgb = apply_color_lut(stored, ds)
            depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        else:
            rgb, depth = stored, int(ds.BitsStored)
    except DecodeError:
        raise
    except (
        ValueError,
        KeyError,
        AttributeError,
        TypeError,
        IndexError,
        NotImplementedError,
    ) as exc:
        # e.g. a Window Width of 0, a LUT descriptor that does not fit its data
        raise DecodeError(
            f"{path}: invalid DICOM rescale/LUT/window attributes ({type(exc).__name__}: {exc})"
        ) from exc
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise DecodeError(f"{path}: expected an (H, W, 3) colour image, got shape {rgb.shape}")
    colour = (rgb.astype(np.float32) / float(2**depth - 1)).clip(0.0, 1.0)
    return np.ascontiguousarray(_to_channels(colour, channels))
