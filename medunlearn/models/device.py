"""Choosing where to compute, and mixed precision: bf16 autocast on CUDA, and on CPUs with
native bf16 arithmetic (AVX512-BF16 or AMX present, and oneDNN allowed to use them) when
asked for."""

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
    """``auto`` takes CUDA when present, else CPU; ``cpu``/``cuda`` force one."""
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
    """oneDNN's own bf16 check: true on any AVX-512 CPU (it may emulate), false when
    ``ONEDNN_MAX_CPU_ISA`` caps it below AVX-512."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


@functools.cache
def native_cpu_bf16() -> bool:
    """Whether this CPU runs bf16 natively: AVX512-BF16 or AMX instructions present *and*
    oneDNN allowed to use them. On plain AVX-512 (Skylake to Ice Lake Xeons) oneDNN emulates
    bf16: 1.9x slower than float32 for three convolutions' forward and backward
    (benchmarks/HISTORY.md, issue 25; 2.3x faster where native)."""
    return _cpu_has_bf16_instructions() and _onednn_allows_bf16()


def autocast(
    device: torch.device, enabled: bool = True, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager:
    """bf16 autocast (no loss scaling needed) on CUDA when ``enabled`` (``amp``); on the CPU
    when ``cpu_bf16`` is asked for (independently of ``enabled``) and :func:`native_cpu_bf16`
    holds, float32 otherwise with one warning. bf16 keeps float32's exponent range and 8
    bits of mantissa: results differ from float32 by rounding (issue 25, BENCHMARKS.md)."""
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
    """Seed Python, numpy and torch; return a CPU generator for data loader shuffling."""
    with GLOBAL_RNG_LOCK:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
