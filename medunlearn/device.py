"""Choosing where to compute, and mixed precision that only exists on CUDA."""

from __future__ import annotations

import contextlib
import os
import random
import threading

import numpy as np
import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else CPU; ``cpu``/``cuda`` force one."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return device


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op on CPU, where it would be slower."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# The flows run sweep entries in threads of one process, which share torch's global RNG.
# Every write to it in the core (seeding, seeded weight initialisation) holds this lock, so
# one run's seeding never lands in the middle of another's initialisation; everything else
# draws from its own torch.Generator.
GLOBAL_RNG_LOCK = threading.RLock()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for data loader shuffling."""
    with GLOBAL_RNG_LOCK:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
