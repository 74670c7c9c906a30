"""Image decoding: every accepted mode maps to the intended [0, 1] intensities (fixtures made
here, the right value computed by hand), and every refused one names the file and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medunlearn.data import ImageLoader, ImageSpec, ManifestError
from medunlearn.data.decode import DecodeError, decode_file


def load(path: Path, channels: int, size: int) -> np.ndarray:
    return ImageLoader(ImageSpec(size, channels))(path).numpy()


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    interpretation: str = "MONOCHROME2",
    bits_stored: int = 12,
    frames: int = 1,
    **elements,
) -> Path:
    """An uncompressed DICOM with the given stored pixels (uint16) and extra elements."""
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
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = interpretation
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------ Pillow modes


def test_16bit_png_is_scaled_by_its_sample_depth(tmp_path) -> None:
    """A 16-bit export spanning 0..65535 decodes to 0..1 (it was 0..3e-5 as int32)."""
    pixels = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(pixels).save(tmp_path / "xray.png")
    assert Image.open(tmp_path / "xray.png").mode == "I;16"
    image = load(tmp_path / "xray.png", 1, 16)
    np.testing.assert_allclose(image[0], pixels / 65535.0, atol=1e-6)
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)


def test_palette_png_gives_the_palette_colours(tmp_path) -> None:
    """Indices 0 and 1 of a red/blue palette decode to red and blue, not index/255."""
    indices = np.zeros((8, 8), dtype=np.uint8)
    indices[:, 4:] = 1
    im = Image.fromarray(indices, mode="P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    im.save(tmp_path / "p.png")
    rgb = load(tmp_path / "p.png", 3, 8)
    assert rgb[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and rgb[:, 0, 7].tolist() == [0.0, 0.0, 1.0]
    grey = load(tmp_path / "p.png", 1, 8)  # luma of pure red: Pillow's L = 299 * 255 / 1000
    assert grey[0, 0, 0] == pytest.approx(76 / 255) and grey[0, 0, 7] == pytest.approx(29 / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_grey_alpha_png_drops_the_alpha(tmp_path, channels) -> None:
    grey = np.full((8, 8), 200, dtype=np.uint8)
    alpha = np.zeros((8, 8), dtype=np.uint8)  # fully transparent: would halve a mean
    Image.fromarray(np.stack([grey, alpha], -1), mode="LA").save(tmp_path / "la.png")
    image = load(tmp_path / "la.png", channels, 8)
    assert image.shape == (channels, 8, 8)
    np.testing.assert_allclose(image, 200 / 255, atol=1e-7)


def test_bilevel_png_decodes_to_zero_and_one(tmp_path) -> None:
    bits = np.zeros((8, 8), dtype=bool)
    bits[2:5, 3] = True
    Image.fromarray(bits).convert("1").save(tmp_path / "mask.png")
    assert Image.open(tmp_path / "mask.png").mode == "1"
    image = load(tmp_path / "mask.png", 1, 8)
    np.testing.assert_array_equal(image[0], bits.astype(np.float32))


def test_rgba_drops_alpha_and_rgb_to_grey_is_luma(tmp_path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 1] = 255  # pure green, alpha 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "g.png")
    assert load(tmp_path / "g.png", 3, 4)[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert load(tmp_path / "g.png", 1, 4)[0, 0, 0] == pytest.approx(150 / 255)  # 587 * 255 / 1000


@pytest.mark.parametrize(
    ("mode", "array"),
    [("I", np.full((4, 4), 70000, dtype=np.int32)), ("F", np.full((4, 4), 0.5, dtype=np.float32))],
)
def test_integer_and_float_tiffs_are_refused_by_name(tmp_path, mode, array) -> None:
    path = tmp_path / f"{mode}.tif"
    Image.fromarray(array, mode=mode).save(path)
    with pytest.raises(DecodeError, match=rf"{mode}.tif: image mode '{mode}' .* not supported"):
        load(path, 1, 4)


def test_multiframe_tiff_is_refused_as_a_volume(tmp_path) -> None:
    frames = [Image.fromarray(np.full((4, 4), v, dtype=np.uint8)) for v in (0, 100, 200)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DecodeError, match=r"stack.tif: 3 frames .* volumes are not supported"):
        load(tmp_path / "stack.tif", 1, 4)


def test_corrupt_file_names_the_file(tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ManifestError, match=r"broken.png: cannot decode image"):
        load(tmp_path / "broken.png", 1, 4)


# ------------------------------------------------------------------------------------ DICOM


def test_monochrome1_is_inverted_so_both_polarities_agree(tmp_path) -> None:
    """The same stored values: MONOCHROME2 gives p / 4095 (12 bits stored), MONOCHROME1
    (minimum is white) gives 1 - p / 4095."""
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 64
    pixels[-1, -1] = 4095  # the 12-bit maximum: full white in MONOCHROME2, black in 1
    mono2 = load(write_dicom(tmp_path / "m2.dcm", pixels), 1, 8)[0]
    mono1 = load(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"), 1, 8)[0]
    np.testing.assert_allclose(mono2, pixels / 4095.0, atol=1e-6)
    np.testing.assert_allclose(mono1, 1.0 - pixels / 4095.0, atol=1e-6)
    assert (mono2[0, 0], mono2[-1, -1], mono1[0, 0], mono1[-1, -1]) == (0.0, 1.0, 1.0, 0.0)


def test_rescale_then_window_is_applied(tmp_path) -> None:
    """Stored p, Rescale Slope 2 and Intercept -1024 give x = 2p - 1024; a LINEAR_EXACT
    window at centre 0, width 2048 maps x to (x - 0) / 2048 + 0.5 = p / 1024, clipped to 1.
    Without the rescale it would be p / 2048 + 0.5; without the window p / 4095."""
    pixels = np.array([[0, 256, 512], [768, 1024, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=2048,
        VOILUTFunction="LINEAR_EXACT",
    )
    decoded = decode_file(path, 1)[0]  # the native 2x3 grid, before any resizing
    np.testing.assert_allclose(decoded, np.minimum(pixels / 1024.0, 1.0), atol=1e-6)


def test_dicom_volume_and_unknown_interpretation_are_refused(tmp_path) -> None:
    volume = np.zeros((3, 4, 4), dtype=np.uint16)
    with pytest.raises(DecodeError, match=r"vol.dcm: DICOM with 3 frames; 3-D volumes"):
        load(write_dicom(tmp_path / "vol.dcm", volume, frames=3), 1, 4)
    with pytest.raises(DecodeError, match=r"hsv.dcm: DICOM photometric interpretation 'HSV'"):
        load(write_dicom(tmp_path / "hsv.dcm", np.zeros((4, 4)), "HSV"), 1, 4)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DecodeError, match=r"junk.dcm: not a readable DICOM file"):
        load(tmp_path / "junk.dcm", 1, 4)


def test_dicom_rows_stay_rows_after_resizing(tmp_path) -> None:
    """A left-to-right ramp keeps its orientation through decoding and resizing."""
    pixels = np.tile(np.arange(0, 4096, 128, dtype=np.uint16), (32, 1))
    image = torch.as_tensor(load(write_dicom(tmp_path / "ramp.dcm", pixels), 3, 16))
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[2])
    # "area" shrinking averages column pairs 256k and 256k + 128: (256k + 64) / 4095
    expected = (np.arange(16) * 256 + 64) / 4095.0
    np.testing.assert_allclose(image[0].numpy(), np.tile(expected, (16, 1)), atol=1e-6)


def test_voi_lut_sequence_maps_every_stored_value(tmp_path) -> None:
    """An 8-bit VOI LUT of 4096 entries, entry i = i // 16 (first mapped value 0): stored
    0, 1000, 2000, 4095 -> 0, 62, 125, 255 -> / 255. (pydicom 3.0's apply_voi wraps 8-bit
    indexes modulo 256 and gave 0, 0.055, 0.051, 0.059.)"""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "US", [i // 16 for i in range(4096)])  # LUT Data, US
    pixels = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "voi.dcm", pixels, VOILUTSequence=[item])
    np.testing.assert_allclose(
        decode_file(path, 1)[0], np.array([[0, 62], [125, 255]]) / 255.0, atol=1e-6
    )


def test_negative_rescale_slope_with_a_window_keeps_the_window_orientation(tmp_path) -> None:
    """Slope -1, intercept 4095: x = 4095 - p. A LINEAR_EXACT window at centre 2047.5,
    width 4095 maps x to x / 4095: so p = 0 -> 1 and p = 4095 -> 0 (inverted by the rescale,
    as the modality values are), not re-inverted by the range."""
    pixels = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "neg.dcm",
        pixels,
        RescaleSlope=-1,
        RescaleIntercept=4095,
        WindowCenter=2047.5,
        WindowWidth=4095,
        VOILUTFunction="LINEAR_EXACT",
    )
    np.testing.assert_allclose(decode_file(path, 1)[0], [[1.0, 0.0]], atol=1e-6)


def test_invalid_window_is_refused_by_name(tmp_path) -> None:
    path = write_dicom(tmp_path / "w0.dcm", np.zeros((4, 4)), WindowCenter=100, WindowWidth=0)
    with pytest.raises(DecodeError, match=r"w0.dcm: invalid DICOM rescale/LUT/window"):
        decode_file(path, 1)


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` (8-bit grey) and holds no pixel
    data: enough for Pillow to read the size, never enough memory to matter."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (12_000, 10_000),  # above our bound, below Pillow's: our header check refuses
        (20_000, 20_000),  # above Pillow's bound too (issue 27: a bare DecompressionBombError)
    ],
)
def test_an_oversized_image_is_refused_before_decoding_naming_the_file(
    tmp_path, width, height
) -> None:
    import warnings

    path = tmp_path / "huge.png"
    png_header_only(path, width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning
        # the header check answers, naming the size (not Pillow's own guard)
        with pytest.raises(DecodeError, match=rf"huge\.png: {width} x {height} pixels, more"):
            decode_file(path, 1)


@pytest.fixture
def small_bound():
    """``data.max_image_pixels`` of 100 for one test, the default restored after."""
    from medunlearn.settings import MAX_IMAGE_PIXELS, set_max_image_pixels

    set_max_image_pixels(100)
    yield
    set_max_image_pixels(MAX_IMAGE_PIXELS)


@pytest.mark.parametrize(
    ("shape", "refused"),
    [((10, 10), False), ((10, 11), True), ((1, 101), True), ((2, 50), False)],
)
@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_the_image_size_bound_is_a_setting(tmp_path, small_bound, shape, refused, kind) -> None:
    """Bound 100 pixels: 10 x 10 passes, 10 x 11 is refused from the header (the DICOM's
    pixel data is never decoded: it is truncated here, and still the size is named)."""
    pixels = np.zeros(shape, dtype=np.uint16)
    if kind == "png":
        path = tmp_path / "x.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
    else:
        path = write_dicom(tmp_path / "x.dcm", pixels)
        if refused:  # a header claiming the size over pixel data that does not hold it
            import pydicom

            ds = pydicom.dcmread(path)
            ds.PixelData = ds.PixelData[:4]
            ds.save_as(path)
    if refused:
        h, w = shape
        with pytest.raises(
            DecodeError, match=rf"x\.(png|dcm): {w} x {h} pixels, more than the 100"
        ):
            decode_file(path, 1)
    else:
        assert decode_file(path, 1).shape == (1, *shape)


def test_load_params_applies_the_bound(tmp_path) -> None:
    from medunlearn.config import load_params
    from medunlearn.settings import MAX_IMAGE_PIXELS as MAX_PIXELS
    from medunlearn.settings import max_image_pixels as max_pixels
    from medunlearn.settings import set_max_image_pixels as set_max_pixels

    (tmp_path / "small.yaml").write_text("data:\n  max_image_pixels: 4096\n")
    (tmp_path / "default.yaml").write_text("data:\n  name: demo\n")
    try:
        load_params(tmp_path / "small.yaml")
        assert max_pixels() == 4096
        load_params(tmp_path / "default.yaml")  # unset: back to the default, not the last
        assert max_pixels() == MAX_PIXELS == 100_000_000
    finally:
        set_max_pixels(MAX_PIXELS)
    with pytest.raises(ValueError, match="positive integer"):
        set_max_pixels(0)
