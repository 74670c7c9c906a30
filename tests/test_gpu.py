"""CUDA checks, run only where a GPU is present (``pytest -m gpu``); skipped on CPU machines."""

from __future__ import annotations

import pytest
import torch

from medunlearn.evidence.metrics import accuracy_on
from medunlearn.unlearn import PSGConfig, psg_unlearn
from medunlearn.unlearn.psg import search_forget_set

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_psg_on_cuda_agrees_with_cpu(demo_model, demo_cohorts) -> None:
    cohorts = demo_cohorts
    cfg = PSGConfig(lr=1e-3, epochs=3, phi=1.0)
    cpu_labels = search_forget_set(demo_model, cohorts.forget_train, cfg, torch.device("cpu")).y_hat
    gpu_labels = search_forget_set(
        demo_model.cuda(), cohorts.forget_train, cfg, torch.device("cuda")
    ).y_hat.cpu()
    demo_model.cpu()
    assert (cpu_labels == gpu_labels).float().mean() > 0.95  # bf16 autocast: near, not exact
    on_gpu = psg_unlearn(
        demo_model,
        cohorts.forget_train,
        cohorts.retain_train,
        PSGConfig(**{**cfg.__dict__, "device": "cuda"}),
    )
    on_cpu = psg_unlearn(
        demo_model,
        cohorts.forget_train,
        cohorts.retain_train,
        PSGConfig(**{**cfg.__dict__, "device": "cpu"}),
    )
    for cohort in (cohorts.forget_test, cohorts.retain_test):
        assert (
            abs(accuracy_on(on_gpu.model.cpu(), cohort) - accuracy_on(on_cpu.model, cohort)) < 0.05
        )
