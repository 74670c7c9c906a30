"""Choosing where to compute, and mixed precision.

bf16 autocast on CUDA, and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX present,
and oneDNN allowed to use them) when asked for.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading

import numpy as np
import torch


def pick_device(preference: str = "auto") -> torch.device:
    """Choose the device to compute on.

    Args:
        preference: ``auto`` (CUDA when present, else CPU), or a ``torch.device`` string
            (``cpu``, ``cuda``, ``cuda:1``) to force one.

    Returns:
        The device.

    Raises:
        RuntimeError: CUDA was requested but is not available.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return device


def _cpu_has_bf16_instructions() -> bool:
    """AVX512-BF16 or AMX on this CPU (torch's cpuinfo probes; they ignore oneDNN's ISA cap)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def _onednn_allows_bf16() -> bool:
    """Ask oneDNN whether it will use bf16.

    True on any AVX-512 CPU (it may emulate), false when ``ONEDNN_MAX_CPU_ISA`` caps it below
    AVX-512 or the build has no oneDNN.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


@functools.cache
def native_cpu_bf16() -> bool:
    """Say whether this CPU runs bf16 natively (the answer is cached for the process).

    AVX512-BF16 or AMX instructions must be present *and* oneDNN allowed to use them. On
    plain AVX-512 (Skylake to Ice Lake Xeons) oneDNN emulates bf16: 1.9x slower than float32
    for three convolutions' forward and backward (benchmarks/HISTORY.md, issue 25; 2.3x
    faster where native).

    Returns:
        True when bf16 autocast on the CPU is worth it.
    """
    return _cpu_has_bf16_instructions() and _onednn_allows_bf16()


def autocast(
    device: torch.device, enabled: bool = True, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager:
    """Choose the mixed-precision context for a forward pass.

    bf16 autocast (no loss scaling needed) on CUDA when ``enabled`` (``amp``); on the CPU when
    ``cpu_bf16`` is asked for (independently of ``enabled``) and :func:`native_cpu_bf16`
    holds, float32 otherwise with one warning per process. bf16 keeps float32's exponent
    range and 8 bits of mantissa: results differ from float32 by rounding (issue 25,
    BENCHMARKS.md).

    Args:
        device: where the computation runs.
        enabled: bf16 on CUDA (the ``amp`` setting).
        cpu_bf16: bf16 on a CPU with native support.

    Returns:
        A ``torch.autocast`` context, or a do-nothing context (float32).
    """
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if cpu_bf16 and device.type == "cpu":
        if native_cpu_bf16():
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        _warn_no_native_bf16()
    return contextlib.nullcontext()


@functools.cache
def _warn_no_native_bf16() -> None:
    logging.getLogger(__name__).warning(
        "cpu_bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); computing in float32"
    )


# The flows run sweep entries in threads of one process, which share torch's global RNG.
# Every write to it in the core (seeding, seeded weight initialisation) holds this lock, so
# one run's seeding never lands in the middle of another's initialisation; everything else
# draws from its own torch.Generator.
GLOBAL_RNG_LOCK = threading.RLock()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for data loader shuffling.

    The global RNGs are seeded under :data:`GLOBAL_RNG_LOCK` (sweep threads share them);
    numpy gets ``seed mod 2^32``; ``PYTHONHASHSEED`` is set only if unset (it affects only
    new processes).

    Args:
        seed: the run's seed.

    Returns:
        A new CPU ``torch.Generator`` seeded with ``seed``.
    """
    with GLOBAL_RNG_LOCK:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
