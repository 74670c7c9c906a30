"""The embedded demo dataset: real handwritten digits shipped inside scikit-learn.

It is a *demo*, not medical data: it lets every scenario (class, device, patient) run
offline with no download. Each 8x8 digit is upsampled to 28x28 and passed through one of three
simulated acquisition devices, each a fixed intensity/contrast/noise profile, so
"deprecate a device" has a visible, learnable signature. Images are grouped under synthetic
patients (1-4 images each, one device per patient, as a patient is scanned at one site).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits


@dataclass(frozen=True)
class DeviceProfile:
    """``pixel = clip(offset + gain * x ** gamma + N(0, noise))`` for x in [0, 1]."""

    name: str
    site: str
    gain: float
    offset: float
    gamma: float
    noise: float
    share: float  # fraction of patients scanned on this device


DEVICES: tuple[DeviceProfile, ...] = (
    DeviceProfile(
        "scanner_a", "site_north", gain=1.0, offset=0.0, gamma=1.0, noise=0.02, share=0.45
    ),
    DeviceProfile(
        "scanner_b", "site_north", gain=0.7, offset=0.2, gamma=1.0, noise=0.04, share=0.35
    ),
    DeviceProfile(
        "scanner_c", "site_south", gain=0.9, offset=0.0, gamma=1.8, noise=0.08, share=0.20
    ),
)
DEMO_SIZE = 28


def demo_source(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Build the demo manifest and its images: scikit-learn's digits through simulated devices.

    Each 8x8 digit (values 0-16) is upsampled bilinearly to 28x28, passed through its
    patient's device profile (:class:`DeviceProfile`) and quantised to 8 bits. Patients hold
    1-4 images and are scanned on one device on one day in 2022-2024.

    Args:
        seed: seed of patients, devices, dates and noise.

    Returns:
        ``(manifest, images)``: the manifest (``image_id``, ``label``, ``patient_id``,
        ``device``, ``site``, ``acquired_at``; no ``path``/``split`` yet) and uint8 images
        (N, 28, 28), N = 1,797, row ``i`` for manifest row ``i``.
    """
    rng = np.random.default_rng(seed)
    digits = load_digits()
    base = torch.as_tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    upsampled = F.interpolate(
        base, size=(DEMO_SIZE, DEMO_SIZE), mode="bilinear", align_corners=False
    )
    upsampled = upsampled[:, 0].clamp(0, 1).numpy()
    n = len(upsampled)

    patient_of = _patients(n, rng)
    n_patients = int(patient_of.max()) + 1
    shares = np.array([d.share for d in DEVICES])
    device_of_patient = rng.choice(len(DEVICES), size=n_patients, p=shares / shares.sum())
    start = np.datetime64("2022-01-01")
    day_of_patient = rng.integers(0, 3 * 365, size=n_patients)

    images = np.empty((n, DEMO_SIZE, DEMO_SIZE), dtype=np.uint8)
    devices: list[str] = []
    sites: list[str] = []
    for i in range(n):
        profile = DEVICES[device_of_patient[patient_of[i]]]
        x = profile.offset + profile.gain * upsampled[i] ** profile.gamma
        x = x + rng.normal(0.0, profile.noise, size=x.shape)
        images[i] = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
        devices.append(profile.name)
        sites.append(profile.site)
    manifest = pd.DataFrame(
        {
            "image_id": [f"demo-{i:05d}" for i in range(n)],
            "label": [str(int(t)) for t in digits.target],
            "patient_id": [f"P{p:04d}" for p in patient_of],
            "device": devices,
            "site": sites,
            "acquired_at": [str(start + int(day_of_patient[p])) for p in patient_of],
        }
    )
    return manifest, images


def _patients(n: int, rng: np.random.Generator) -> np.ndarray:
    """Assign images to synthetic patients holding 1-4 consecutive-in-shuffle images each."""
    order = rng.permutation(n)
    patient_of = np.empty(n, dtype=np.int64)
    position, patient = 0, 0
    while position < n:
        count = int(rng.integers(1, 5))
        patient_of[order[position : position + count]] = patient
        position += count
        patient += 1
    return patient_of
