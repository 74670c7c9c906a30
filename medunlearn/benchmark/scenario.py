"""Benchmark scenarios: one small YAML file each (dataset, model, recipe, request, budget).

A scenario file under ``benchmarks/`` looks like::

    name: retina_class_retirement
    data: {source: medmnist, path: ../shared/data/medmnist/retinamnist.npz,
           image_size: 28, channels: 3}
    model: {name: allcnn, kwargs: {width: 0.5}}
    recipe: {epochs: 30, lr: 0.001, select_metric: accuracy}   # TrainConfig fields
    request: {reason: class_retirement, selector: {labels: ["2"]}}
    methods: {psg: {...}}        # fixed settings per method (on top of the defaults)
    grid: {psg: {lr: [0.001, 0.0003]}}   # tuning grid per method (replaces the default)
    seeds: [0, 1, 2]
    quick: {recipe: {epochs: 5}}  # overrides for --quick

Relative data paths are resolved against the working directory (the repository root).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medunlearn.data.request import ForgetRequest
from medunlearn.errors import Refusal
from medunlearn.unlearn.methods import METHODS

# PSG's grid (Nahass et al.'s tunable outer loss): learning rate x forget loss (hard labels,
# soft targets at temperature 2, top-2 targets at temperature 2) x retain weight phi. phi 3 was
# added after the demo class-retirement revision found it kept the retrain's retain accuracy.
PSG_GRID: list[dict[str, Any]] = [
    {"lr": lr, **loss, "phi": phi}
    for lr in (1e-3, 1e-4, 1e-5)
    for loss in (
        {"forget_loss": "hard"},
        {"forget_loss": "soft", "temperature": 2.0},
        {"forget_loss": "topk", "topk": 2, "temperature": 2.0},
    )
    for phi in (1.0, 0.3, 3.0)
]

# Tuning grids: a mapping of 1-2 key hyperparameters (every combination; the first value of
# each is the default) or an explicit list of points.
DEFAULT_GRIDS: dict[str, dict[str, list[Any]] | list[dict[str, Any]]] = {
    "retrain": {},
    "finetune": {"lr": [0.003, 0.001, 0.01]},
    "l1_sparse": {"lr": [0.003, 0.001], "l1": [1e-3, 1e-2]},
    "neggrad_plus": {"lr": [1e-3, 3e-4], "alpha": [0.95, 0.9]},
    "random_label": {"lr": [1e-3, 3e-3, 3e-4]},
    "boundary_shrink": {"lr": [1e-5, 1e-4, 1e-3]},
    "boundary_expand": {"lr": [1e-3, 1e-4, 1e-2]},
    "scrub": {"lr": [5e-4, 2e-3], "msteps": [2, 1]},
    "salun": {"lr": [1e-3, 3e-3, 3e-4]},
    "psg": PSG_GRID,
    "psg_compose": {"forget_weight": [1.0, 2.0]},
}
KNOWN_KEYS = {
    "name",
    "description",
    "data",
    "model",
    "recipe",
    "request",
    "methods",
    "grid",
    "seeds",
    "reference_seed",
    "reference_models",
    "quick",
}


class ScenarioError(Refusal, ValueError):
    """A scenario file is malformed; the message names the file and the key."""


@dataclass
class Scenario:
    """One benchmark scenario, as read from its YAML file by :func:`load_scenario`.

    Attributes:
        name: the scenario's name (its result files are ``<name>.json``, ``<name>.md``).
        data: the data settings (``source``, ``path``, ``image_size`` in pixels,
            ``channels``, ...), as in the params file's ``data`` section.
        model: ``name`` and ``kwargs`` of the architecture.
        recipe: training settings (``medunlearn.models.training.TrainConfig`` fields).
        request: the forget request every method serves.
        methods: fixed settings per method, on top of the defaults.
        grid: tuning grid per method (replaces :data:`DEFAULT_GRIDS`' entry).
        seeds: the seeds each method runs with.
        reference_seed: the retrain reference's seed.
        reference_models: extra retrains (seeds ``reference_seed + 1`` ...) for the LiRA
            audit and the gate calibration.
        description: free text.
        source_file: the file it was read from.
        quick: read with ``--quick`` (its ``quick`` overrides applied, one seed).
    """

    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    recipe: dict[str, Any]
    request: ForgetRequest
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    reference_seed: int = 100
    reference_models: int = 4  # extra retrains (seeds reference_seed+1...): audit + calibration
    description: str = ""
    source_file: str = ""
    quick: bool = False

    def grid_for(self, method: str, quick: bool | None = None) -> list[dict[str, Any]]:
        """The tuning grid's points for a method.

        Args:
            method: a method name.
            quick: keep 2 values of the first key (or the first 2 points of an explicit
                list) and 1 of every other; default: the scenario's :attr:`quick`.

        Returns:
            Grid points (dicts of settings), every combination of the grid's keys in order;
            ``[{}]`` for a method without a grid.
        """
        quick = self.quick if quick is None else quick
        grid = self.grid.get(method, DEFAULT_GRIDS.get(method, {}))
        if isinstance(grid, list):
            return [dict(p) for p in grid][: 2 if quick else None]
        keys = list(grid)
        points: list[dict[str, Any]] = [{}]
        for i, key in enumerate(keys):
            values = list(grid[key])
            if quick:
                values = values[:2] if i == 0 else values[:1]
            points = [{**p, key: v} for p in points for v in values]
        return points

    def data_key(self) -> str:
        """Hash of the data settings: the materialised dataset is cached under it.

        Returns:
            The first 12 hex digits of the SHA-256 of the sorted JSON of :attr:`data`.
        """
        blob = json.dumps(self.data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def merge_settings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, every other value in ``override`` replaces.

    Args:
        base: the settings to start from (not changed).
        override: the settings that win.

    Returns:
        A new mapping (deep copies; neither argument is shared with it).
    """
    out = copy.deepcopy(base)
    for k, v in override.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = merge_settings(out[k], v) if nested else copy.deepcopy(v)
    return out


def load_scenario(path: str | Path, quick: bool = False) -> Scenario:
    """Read and check a scenario file; with ``quick`` apply its ``quick`` overrides.

    Args:
        path: the scenario's YAML file.
        quick: apply the file's ``quick`` overrides and keep only the first seed.

    Returns:
        The scenario.

    Raises:
        ScenarioError: the file is missing, not a mapping, has an unknown or a missing
            required key, names an unknown method, or its request is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: scenario file not found")
    obj = yaml.safe_load(path.read_text())
    if not isinstance(obj, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping")
    unknown = set(obj) - KNOWN_KEYS
    if unknown:
        raise ScenarioError(f"{path}: unknown key(s) {sorted(unknown)}")
    for key in ("name", "data", "model", "recipe", "request"):
        if key not in obj:
            raise ScenarioError(f"{path}: missing required key '{key}'")
    if quick and obj.get("quick"):
        obj = merge_settings(obj, obj["quick"])
    for section in ("methods", "grid"):
        bad = set(obj.get(section) or {}) - set(METHODS)
        if bad:
            raise ScenarioError(f"{path}: {section}: unknown method(s) {sorted(bad)}")
    try:
        request = ForgetRequest.from_dict(obj["request"], f"{path}: request")
    except ValueError as exc:
        raise ScenarioError(str(exc)) from exc
    return Scenario(
        name=str(obj["name"]),
        data=dict(obj["data"]),
        model=dict(obj["model"]),
        recipe=dict(obj["recipe"]),
        request=request,
        methods={k: dict(v or {}) for k, v in (obj.get("methods") or {}).items()},
        grid={
            k: [dict(p) for p in v] if isinstance(v, list) else dict(v or {})
            for k, v in (obj.get("grid") or {}).items()
        },
        seeds=[int(s) for s in obj.get("seeds", [0, 1, 2])][: 1 if quick else None],
        reference_seed=int(obj.get("reference_seed", 100)),
        reference_models=int(obj.get("reference_models", 4)),
        description=str(obj.get("description", "")),
        source_file=str(path),
        quick=quick,
    )
