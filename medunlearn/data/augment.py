"""Batched, seeded training augmentation on (N, C, H, W) tensors, on the batch's own device.

One random rotation, shift and (optional) horizontal flip per image, all applied to a whole
batch in one ``torch.nn.functional.affine_grid`` + ``grid_sample`` call (bilinear, zeros
outside the image): the same distributions as the per-image MONAI ``RandFlip`` +
``RandAffine`` pipeline it replaces (angle ~ U[-rotate_deg, rotate_deg], shift per axis ~
U[-shift, shift] x the image side, flip with probability 1/2 along the width), at a fraction
of the cost: 1,150 demo digits per epoch took 28.6 s image by image in MONAI and 0.42 s
batched (issue 25).

Why not kornia: its random parameter generators draw from torch's global RNG, which the
flows' sweep threads share, so a run's augmentation would depend on what the other threads
drew; here every run draws from its own ``torch.Generator`` (on the CPU, so the same seed
gives the same parameters on any device). The warp itself is torch's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SPEC_KEYS = ("flip", "rotate_deg", "shift")


@dataclass(frozen=True)
class AugmentParams:
    """The parameters drawn for one batch of N images (all on the CPU).

    ``angle``: (N,) radians, counter-clockwise as displayed (row 0 at the top);
    ``shift``: (N, 2) fractions of the image side along (height, width): content moves
    down / right by ``shift * side`` pixels; ``flip``: (N,) bool, mirrored along the width
    before the rotation and shift.
    """

    angle: torch.Tensor
    shift: torch.Tensor
    flip: torch.Tensor


class BatchAugmentation:
    """Random rotation, shift and flip of a batch, drawn from a seeded generator.

    Args:
        flip: mirror each image along its width with probability 1/2 (opt-in: it turns
            one digit, or one side of a chest, into another).
        rotate_deg: maximum absolute rotation, degrees.
        shift: maximum absolute shift along each axis, as a fraction of the image side.
        seed: seed of the run's own ``torch.Generator``. Training seeds its shuffle
            generator with the same number, so both replay one mt19937 stream; decoupling
            them changes every trained model, and is left for when the defaults are
            re-chosen (issue 26: the demo's PSG outcome is sensitive to rounding-level
            changes, BENCHMARKS.md issue 25).

    Raises:
        ValueError: a negative ``rotate_deg`` or a ``shift`` outside [0, 1).
    """

    def __init__(
        self, flip: bool = False, rotate_deg: float = 0.0, shift: float = 0.0, seed: int = 0
    ):
        if rotate_deg < 0 or not 0 <= shift < 1:
            raise ValueError(
                f"augmentation: rotate_deg must be >= 0 and shift in [0, 1), "
                f"got rotate_deg={rotate_deg}, shift={shift}"
            )
        self.flip = bool(flip)
        self.rotate = math.radians(float(rotate_deg))
        self.shift = float(shift)
        self.generator = torch.Generator().manual_seed(int(seed))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None, seed: int = 0) -> BatchAugmentation | None:
        """Build the augmentation a ``{flip, rotate_deg, shift}`` mapping describes.

        Args:
            spec: ``flip`` (bool), ``rotate_deg`` (degrees) and ``shift`` (share of the side);
                missing or ``None`` values are off. ``None`` or ``{}``: no augmentation.
            seed: seed of the augmentation's own ``torch.Generator``.

        Returns:
            The augmentation, or ``None`` when the spec is empty or every setting is off.

        Raises:
            ValueError: an unknown key (named), a negative ``rotate_deg`` or a ``shift``
                outside [0, 1).
        """
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"augmentation: unknown key(s) {unknown}; known: {list(SPEC_KEYS)}")
        augment = cls(
            flip=bool(spec.get("flip", False)),
            rotate_deg=float(spec.get("rotate_deg", 0.0) or 0.0),
            shift=float(spec.get("shift", 0.0) or 0.0),
            seed=seed,
        )
        return augment if augment.active else None

    @property
    def active(self) -> bool:
        """Whether any setting is on (flip, a rotation or a shift above 0)."""
        return self.flip or self.rotate > 0 or self.shift > 0

    def sample(self, n: int) -> AugmentParams:
        """Draw the parameters of ``n`` images (advances the generator).

        Args:
            n: number of images in the batch.

        Returns:
            Angles (N,) in radians, shifts (N, 2) as shares of the side and flips (N,) bool,
            all float64 / bool on the CPU (the same for a seed on any device).
        """
        g = self.generator
        angle = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * self.rotate
        shift = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * self.shift
        flip = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        return AugmentParams(angle=angle, shift=shift, flip=flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch randomly on its own device.

        Args:
            x: images (N, C, H, W), square (H == W), pixels in [0, 1].

        Returns:
            A new tensor of the same shape (float32 unless ``x`` is another floating dtype), or
            ``x`` itself when nothing applies (an empty batch, every setting off).

        Raises:
            ValueError: ``x`` is not a square (N, C, H, W) batch.
        """
        if not self.active or len(x) == 0:
            return x
        return apply_augmentation(x, self.sample(len(x)))


def apply_augmentation(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Warp each image of ``x`` by its parameters; zeros outside the image.

    ``output(p) = input(F R^-1 (p - t))`` in pixel coordinates centred on the image, with R
    the rotation, t the shift (in pixels) and F the flip: the inverse map that
    ``torch.nn.functional.affine_grid`` takes (align_corners=False, so pixel centres sit at
    ``(2 i + 1) / side - 1`` and a flip of the normalised axis is exact). Bilinear
    interpolation (``grid_sample``).

    Args:
        x: images (N, C, H, W), square, on any device; an integer tensor is warped as
            float32.
        params: the batch's parameters (:meth:`BatchAugmentation.sample`), N entries each.

    Returns:
        The warped images, same shape as ``x``; ``x`` itself when every parameter is zero,
        and an exact mirror (no interpolation) when only flips apply.

    Raises:
        ValueError: ``x`` is not 4-D and square, or ``params`` hold another batch size.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"augmentation needs square (N, C, H, W) batches, got {tuple(x.shape)}")
    n = len(x)
    if len(params.angle) != n:
        raise ValueError(f"augmentation parameters for {len(params.angle)} images, batch of {n}")
    rotates = bool((params.angle != 0).any() or (params.shift != 0).any())
    if not rotates:
        if not params.flip.any():
            return x
        return torch.where(params.flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    cos, sin = params.angle.cos(), params.angle.sin()
    sign = 1.0 - 2.0 * params.flip.double()  # -1 mirrors the width axis
    # Normalised (x = width, y = height, y down) coordinates. The content turns by a
    # counter-clockwise as displayed, so the inverse map turns the output point back:
    # R^-1 (x, y) = (cos a x - sin a y, sin a x + cos a y); then F mirrors x.
    m = torch.zeros(n, 2, 2, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1] = sign * cos, -sign * sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    # a shift of s (a fraction of the side) is 2 s normalised units; (x, y) = (width, height)
    t = 2.0 * params.shift.flip(-1)
    theta = torch.cat([m, -(m @ t.unsqueeze(-1))], dim=2)  # input = m (p - t)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    grid = F.affine_grid(theta.to(x.device, dtype), list(x.shape), align_corners=False)
    return F.grid_sample(
        x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
