"""Probe: does fine-tuning without the training augmentation move the PneumoniaMNIST model?

    python scripts/probe_update_sensitivity.py [--quick]

Loads (or trains, through the benchmark's model bank) the consent-withdrawal scenario's
deployed model, then runs plain fine-tuning (1 epoch, lr 1e-5) and PSG at lr 1e-5, each with
the deployed model's training augmentation and without it (``augment: false``), and prints
test accuracy, balanced accuracy and per-class recall. Issue 11 traced the unexplained
accuracy drop of issue 4 (PSG at lr 1e-5: 0.919 -> 0.786) to updates on un-augmented images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medunlearn.benchmark import load_scenario
from medunlearn.benchmark.runner import (
    method_config,
    prepare_data,
    scenario_cohorts,
    scenario_models,
)
from medunlearn.config import load_section
from medunlearn.evidence.metrics import unlearning_metrics
from medunlearn.unlearn.methods import psg_base, run_method

SCENARIO = "benchmarks/pneumonia_consent_withdrawal.yaml"
RUNS = [
    ("finetune", {"lr": 1e-5, "epochs": 1}),
    ("psg", {"lr": 1e-5}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the scenario's quick recipe")
    args = parser.parse_args()
    torch.set_num_threads(2)
    scenario = load_scenario(SCENARIO, quick=args.quick)
    cache = Path(".cache/bench")
    splits = prepare_data(scenario, cache)
    cohorts = scenario_cohorts(splits, scenario)
    deployed = scenario_models(scenario, splits, cohorts, cache, n_references=0).deployed
    deployed.train_augmentation = dict(scenario.recipe.get("augmentation") or {})
    base = psg_base(load_section("unlearn", "params.yaml"))

    def show(tag: str, model: torch.nn.Module) -> None:
        m = unlearning_metrics(model, cohorts)
        recall = ", ".join(f"{k} {v:.3f}" for k, v in m.retain_test_recall.items())
        print(
            f"{tag:50s} test {m.test_acc:.3f}  balanced {m.test_balanced_acc:.3f}  recall {recall}"
        )

    show("deployed", deployed)
    for method, point in RUNS:
        for augment in (True, False):
            cfg = method_config(scenario, method, base if method == "psg" else {}, point, 0)
            cfg["augment"] = augment
            show(f"{method} {point} augment={augment}", run_method(method, deployed, cohorts, cfg))


if __name__ == "__main__":
    main()
