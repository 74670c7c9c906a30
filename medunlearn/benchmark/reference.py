"""The reference study's model and training recipe as a benchmark scenario variant.

Nahass et al.'s public code trains a full-width AllCNN with plain SGD and no augmentation.
``scripts/compare_reference.py`` runs their ``boundary_shrink`` on a model trained this way,
and ``scripts/tune_defaults.py`` tunes the class-retirement defaults on the same model as a
second RetinaMNIST scenario (``reference:benchmarks/retina_class_retirement.yaml``). Both
build it here, so its name, and with it the model bank's key, is the same in both.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from medunlearn.benchmark.scenario import Scenario, load_scenario

# the reference code's training: SGD, step size 0.01, momentum 0.9, weight decay 1e-4,
# batch 64, 15 epochs, no augmentation, best epoch by validation accuracy
REFERENCE_RECIPE: dict[str, Any] = {
    "epochs": 15,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "scheduler": "none",
    "batch_size": 64,
    "select_metric": "accuracy",
    "augmentation": {"flip": False, "rotate_deg": 0, "shift": 0.0},
    "seed": 0,
}


def reference_scenario(path: str | Path, width: float = 1.0) -> Scenario:
    """The scenario at ``path`` with the reference code's model and training recipe.

    Args:
        path: a scenario file under ``benchmarks/``.
        width: the AllCNN width multiplier (1.0: the reference code's full width).

    Returns:
        The loaded scenario with ``model`` AllCNN at ``width``, ``recipe``
        :data:`REFERENCE_RECIPE` (no ``cpu_bf16``) and the name
        ``<name>_reference_w<width>`` (e.g. ``retina_class_retirement_reference_w1``), which
        keys the model bank, so the comparison and the tuning share one trained model.

    Raises:
        ScenarioError: the file is missing or malformed (see ``load_scenario``).
    """
    base = load_scenario(path)
    return dataclasses.replace(
        base,
        name=f"{base.name}_reference_w{width:g}",
        model={"name": "allcnn", "kwargs": {"width": width}},
        recipe=copy.deepcopy(REFERENCE_RECIPE),
    )
