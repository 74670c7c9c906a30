"""Batched augmentation: each warp checked against an independent computation (torch.rot90,
a zero-filled integer shift, scipy.ndimage.rotate), the parameter distributions against
their definition (KS tests), the image-level distribution against MONAI's per-image
RandAffine it replaced, and batching without a per-image Python call."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from medunlearn.data.augment import AugmentParams, BatchAugmentation, apply_augmentation
from medunlearn.data.batches import endless_batches, iterate_batches
from medunlearn.data.images import LabelledImages


def params(n: int = 1, angle_deg: float = 0.0, shift=(0.0, 0.0), flip: bool = False):
    return AugmentParams(
        angle=torch.full((n,), math.radians(angle_deg), dtype=torch.float64),
        shift=torch.tensor([shift] * n, dtype=torch.float64),
        flip=torch.full((n,), flip),
    )


def image(size: int = 12, channels: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(seed))


def shifted(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """Content moved ``down`` rows and ``right`` columns, zeros where nothing came in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    src_r, dst_r = slice(max(0, -down), h - max(0, down)), slice(max(0, down), h - max(0, -down))
    src_c, dst_c = (
        slice(max(0, -right), w - max(0, right)),
        slice(max(0, right), w - max(0, -right)),
    )
    out[..., dst_r, dst_c] = x[..., src_r, src_c]
    return out


@pytest.mark.parametrize(
    ("angle", "k"),
    [(90.0, 1), (-90.0, -1), (180.0, 2)],
)
def test_quarter_turns_equal_rot90(angle, k) -> None:
    """A quarter turn counter-clockwise as displayed is numpy/torch's rot90 (first towards
    second axis)."""
    x = image()
    out = apply_augmentation(x, params(angle_deg=angle))
    assert torch.allclose(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize(("down", "right"), [(2, 0), (0, -3), (-1, 4), (3, 3)])
def test_whole_pixel_shifts_move_content_and_fill_zeros(down, right) -> None:
    x = image(size=16)
    out = apply_augmentation(x, params(shift=(down / 16, right / 16)))
    assert torch.allclose(out, shifted(x, down, right), atol=1e-5)


def test_flip_mirrors_the_width_then_rotation_and_shift_follow() -> None:
    x = image()
    assert torch.equal(apply_augmentation(x, params(flip=True)), x.flip(-1))
    out = apply_augmentation(x, params(angle_deg=90.0, shift=(2 / 12, 0.0), flip=True))
    expected = shifted(torch.rot90(x.flip(-1), 1, dims=(-2, -1)), 2, 0)
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("angle", [7.0, -13.0, 25.0])
def test_any_angle_matches_scipy_bilinear_rotation(angle) -> None:
    """scipy's order-1 (bilinear) rotation about the centre with zero padding, in the
    (row, column) plane with axes=(0, 1): a positive angle turns the displayed image
    counter-clockwise there too (the quarter-turn test pins our direction)."""
    x = image(size=20, channels=1)
    out = apply_augmentation(x, params(angle_deg=angle))[0, 0].numpy()
    ref = ndimage.rotate(
        x[0, 0].numpy(), angle, axes=(0, 1), reshape=False, order=1, mode="grid-constant"
    )
    assert np.abs(out - ref).max() < 1e-4


def test_parameters_follow_their_distributions() -> None:
    aug = BatchAugmentation(flip=True, rotate_deg=10, shift=0.1, seed=3)
    drawn = aug.sample(20_000)
    bound = math.radians(10)
    assert drawn.angle.abs().max() <= bound
    assert stats.kstest(drawn.angle.numpy(), stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3
    for axis in (0, 1):
        column = drawn.shift[:, axis].numpy()
        assert np.abs(column).max() <= 0.1
        assert stats.kstest(column, stats.uniform(-0.1, 0.2).cdf).pvalue > 1e-3
    flips = int(drawn.flip.sum())
    assert stats.binomtest(flips, 20_000, 0.5).pvalue > 1e-3
    # axes independent of each other
    assert abs(stats.pearsonr(drawn.shift[:, 0], drawn.shift[:, 1]).statistic) < 0.03
    off = BatchAugmentation(rotate_deg=10, seed=3).sample(100)
    assert not off.flip.any() and not off.shift.any()


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    spec = {"flip": True, "rotate_deg": 15, "shift": 0.05}
    a = BatchAugmentation.from_spec(spec, seed=1)(x)
    b = BatchAugmentation.from_spec(spec, seed=1)(x)
    c = BatchAugmentation.from_spec(spec, seed=2)(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_off_settings_give_no_augmentation_and_unknown_keys_are_named() -> None:
    assert BatchAugmentation.from_spec({}) is None
    assert BatchAugmentation.from_spec({"flip": False, "rotate_deg": 0, "shift": 0}) is None
    with pytest.raises(ValueError, match="rotate"):
        BatchAugmentation.from_spec({"rotate": 10})
    with pytest.raises(ValueError, match="shift"):
        BatchAugmentation(shift=1.5)


def test_image_distribution_matches_monai_rand_affine() -> None:
    """A bright dot's position after augmentation: our batched draws and MONAI's per-image
    ``RandAffine`` (the transform this replaced) agree by two-sample KS tests."""
    from monai.transforms import RandAffine

    size, n = 21, 300
    x = torch.zeros(1, 1, size, size)
    x[..., 5, 14] = 1.0  # off-centre, so rotation moves it too

    def centroid(img: torch.Tensor) -> tuple[float, float]:
        img = img.reshape(size, size).double()
        rows, cols = torch.meshgrid(
            torch.arange(size, dtype=torch.float64),
            torch.arange(size, dtype=torch.float64),
            indexing="ij",
        )
        total = img.sum()
        return float((rows * img).sum() / total), float((cols * img).sum() / total)

    ours = BatchAugmentation(rotate_deg=20, shift=0.1, seed=0)(x.expand(n, -1, -1, -1))
    ours_c = np.array([centroid(img) for img in ours])
    monai = RandAffine(
        prob=1.0,
        rotate_range=(math.radians(20),),
        translate_range=(0.1 * size, 0.1 * size),
        padding_mode="zeros",
        cache_grid=False,
    )
    monai.set_random_state(seed=0)
    monai_c = np.array([centroid(torch.as_tensor(monai(x[0]))) for _ in range(n)])
    for axis in (0, 1):
        assert stats.ks_2samp(ours_c[:, axis], monai_c[:, axis]).pvalue > 1e-3
    # and both really move it: spread of a few pixels, not zero
    assert ours_c.std(axis=0).min() > 1.0


def dataset(n: int = 10) -> LabelledImages:
    import pandas as pd

    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    rows = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)]})
    return LabelledImages(rows, torch.arange(n), images=images)


def test_batches_cover_every_image_once_per_pass_seeded_without_per_image_calls(
    monkeypatch,
) -> None:
    data = dataset(10)
    calls = []
    monkeypatch.setattr(LabelledImages, "__getitem__", lambda self, i: calls.append(i))

    def order(seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [y.tolist() for _, y in iterate_batches(data, 4, shuffle=True, generator=g)]

    first = order(5)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10))
    assert first == order(5) and first != order(6)
    assert [y.tolist() for _, y in iterate_batches(data, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert not calls  # in-memory images are cut in bulk, never fetched one by one
    # images travel with their labels; drop_last drops the short batch
    for x, y in iterate_batches(data, 4, shuffle=True, generator=torch.Generator(), drop_last=True):
        assert len(y) == 4 and torch.equal(x[:, 0, 0, 0], y.float())
    stream = endless_batches(data, 4, generator=torch.Generator().manual_seed(0))
    assert [len(next(stream)[1]) for _ in range(6)] == [4, 4, 2, 4, 4, 2]


@pytest.mark.parametrize(
    ("theta", "translate"),
    [(0.3, (2.0, -1.5)), (math.pi / 2, (0.0, 0.0)), (-0.2, (0.7, 3.1)), (0.0, (-2.0, 1.0))],
)
def test_each_warp_equals_monai_affine_with_opposite_signs(theta, translate) -> None:
    """Pins the sign conventions exactly: MONAI's ``Affine`` (the deterministic transform
    behind ``RandAffine``; bilinear, zeros) with ``rotate_params=theta`` and
    ``translate_params=t`` pixels is our warp at angle ``-theta`` and shift ``-t / side``.
    Angles and shifts are drawn from symmetric ranges, so the distributions are the same."""
    from monai.transforms import Affine

    size = 17
    x = torch.rand(1, 2, size, size, generator=torch.Generator().manual_seed(0))
    ref = Affine(
        rotate_params=theta,
        translate_params=translate,
        padding_mode="zeros",
        mode="bilinear",
        image_only=True,
    )(x[0])
    ours = apply_augmentation(
        x,
        AugmentParams(
            angle=torch.tensor([-theta], dtype=torch.float64),
            shift=torch.tensor([[-translate[0] / size, -translate[1] / size]], dtype=torch.float64),
            flip=torch.tensor([False]),
        ),
    )[0]
    assert (torch.as_tensor(ref) - ours).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("spec", "flip", "rotate", "shift"),
    [
        ({"flip": True}, True, 0.0, 0.0),
        ({"rotate_deg": 5}, False, math.radians(5), 0.0),
        ({"shift": 0.1}, False, 0.0, 0.1),
        ({"flip": False, "rotate_deg": 0, "shift": 0.2}, False, 0.0, 0.2),
    ],
)
def test_each_key_of_a_spec_sets_its_own_setting(spec, flip, rotate, shift) -> None:
    aug = BatchAugmentation.from_spec(spec)
    assert (aug.flip, aug.rotate, aug.shift) == (flip, pytest.approx(rotate), shift)
    drawn = aug.sample(400)
    assert bool(drawn.flip.any()) == flip
    assert bool(drawn.angle.any()) == (rotate > 0) and bool(drawn.shift.any()) == (shift > 0)


def test_batches_are_augmented_on_the_device_they_go_to() -> None:
    """``iterate_batches(device=..., augment=...)`` moves each batch first, then augments it
    there (checked on torch's ``meta`` device, which needs no GPU), and the warp keeps a
    batch on its device."""
    data = dataset(10)
    devices: list[str] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        devices.append(x.device.type)
        return x

    batches = list(iterate_batches(data, 4, device="meta", augment=spy))
    assert devices == ["meta"] * 3 and all(x.device.type == "meta" for x, _ in batches)
    warped = BatchAugmentation(rotate_deg=10, shift=0.1, flip=True)(
        torch.zeros(3, 1, 8, 8, device="meta")
    )
    assert warped.device.type == "meta" and warped.shape == (3, 1, 8, 8)


def test_streamed_images_give_the_same_batches_as_in_memory(tmp_path) -> None:
    """A dataset decoded from files on access (a ``DataLoader`` in the same seeded order) and
    the same images in memory give identical shuffled batches, drop_last included."""
    import pandas as pd
    from PIL import Image

    from medunlearn.data.images import ImageLoader, ImageSpec

    n, side = 10, 6
    pixels = torch.stack(
        [torch.full((1, side, side), k / 255.0, dtype=torch.float32) for k in range(0, 50, 5)]
    )
    paths = []
    for k in range(n):
        path = tmp_path / f"i{k}.png"
        Image.fromarray((pixels[k, 0].numpy() * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    rows = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)]})
    labels = torch.arange(n)
    streamed = LabelledImages(rows, labels, paths=paths, loader=ImageLoader(ImageSpec(side, 1)))
    in_memory = LabelledImages(rows, labels, images=pixels)
    assert not streamed.in_memory
    for drop_last in (False, True):
        a, b = (
            list(
                iterate_batches(
                    d,
                    4,
                    shuffle=True,
                    generator=torch.Generator().manual_seed(3),
                    drop_last=drop_last,
                )
            )
            for d in (streamed, in_memory)
        )
        assert [len(y) for _, y in a] == ([4, 4] if drop_last else [4, 4, 2])
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-6)
