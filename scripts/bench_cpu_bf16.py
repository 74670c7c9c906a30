"""Benchmark: float32 vs CPU bf16 autocast on a small AllCNN-like stack (issue 25).

    python scripts/bench_cpu_bf16.py native
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python scripts/bench_cpu_bf16.py plain-avx512

Three 3x3 convolutions (3 -> 48 -> 96 -> 96 channels), batch 64 at 32 px, forward and
backward, 8 timed steps after one warm-up, one thread, twice each. With oneDNN capped at
plain AVX-512 (no AVX512-BF16 / AMX), bf16 is emulated: the case ``native_cpu_bf16`` rules
out (``medunlearn/models/device.py``).
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "run"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 48, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(48, 96, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(96, 96, 3, padding=1, stride=2),
    )
    x = torch.randn(64, 3, 32, 32)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = model(x)
        y.float().sum().backward()

    for bf16 in (False, True, False, True):
        step(bf16)
        start = time.perf_counter()
        for _ in range(8):
            step(bf16)
        print(label, "bf16" if bf16 else "fp32", round(time.perf_counter() - start, 3), "s")


if __name__ == "__main__":
    main()
