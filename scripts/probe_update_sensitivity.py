"""Probe: how far a tiny update moves the PneumoniaMNIST model (BENCHMARKS.md, issue 4).

    python scripts/probe_update_sensitivity.py

Trains the consent-withdrawal scenario's deployed model with its quick recipe, then runs
PSG, Boundary Shrink and plain fine-tuning at learning rate 0 and 1e-5 and prints
forget-train and test accuracy. Written to check whether PSG's accuracy drop at lr 1e-5 in
the full run is specific to PSG or any update moves this binary model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medunlearn.benchmark import load_scenario
from medunlearn.benchmark.runner import method_config, prepare_data, train_model
from medunlearn.config import load_section
from medunlearn.metrics import unlearning_metrics
from medunlearn.unlearn.methods import run_method
from medunlearn.unlearn.request import build_cohorts

SCENARIO = "benchmarks/pneumonia_consent_withdrawal.yaml"
PSG_DEFAULTS = load_section("unlearn", "params.yaml")
RUNS = [
    ("psg", {"lr": 0.0}),
    ("psg", {"lr": 1e-5}),
    ("psg", {"lr": 1e-5, "phi": 0.0}),
    ("psg", {"lr": 1e-5, "retain_loss": "hard"}),
    ("boundary_shrink", {"lr": 0.0}),
    ("finetune", {"lr": 1e-5}),
]


def main() -> None:
    torch.set_num_threads(2)
    scenario = load_scenario(SCENARIO, quick=True)
    splits = prepare_data(scenario, Path(".cache/bench"))
    cohorts = build_cohorts(
        splits.manifest,
        splits.train,
        splits.val,
        splits.test,
        splits.info.class_names,
        scenario.request,
    )
    deployed, _ = train_model(scenario, splits, splits.train, splits.val, 0)
    # the PSG defaults without per-reason overrides: what the full benchmark run used
    base = {k: v for k, v in PSG_DEFAULTS.items() if k != "by_reason"}

    def show(tag: str, model: torch.nn.Module) -> None:
        m = unlearning_metrics(model, cohorts).to_dict()
        print(f"{tag:45s} forget-train {m['forget_train_acc']:.3f}  test {m['test_acc']:.3f}")

    show("deployed", deployed)
    for method, point in RUNS:
        if method in ("psg", "boundary_shrink"):
            cfg = method_config(scenario, method, base, point, 0)
        else:
            cfg = {**point, "seed": 0}
        show(f"{method} {point}", run_method(method, deployed, cohorts, cfg))


if __name__ == "__main__":
    main()
