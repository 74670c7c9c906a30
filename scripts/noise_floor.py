"""Re-measure a scenario's retrain noise floor from its model bank under the current
metric code, without re-running any method.

    python scripts/noise_floor.py benchmarks/retina_class_retirement.yaml [--cache .cache/bench]

Why: a change to a metric (e.g. MIA-efficacy's attack) changes the floor every method is
judged against; the bank already holds the deployed model and the retrains, so the floor
costs forward passes only. Prints, per model, UA/RA/TA/MIA-efficacy and its Avg Gap to the
retrain reference in percentage points (SalUn's), then the floor's mean and sd. Refuses
(``LookupError``) when the bank lacks a model rather than training it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from medunlearn.benchmark.runner import prepare_data, scenario_cohorts, scenario_models
from medunlearn.benchmark.scenario import load_scenario
from medunlearn.config import load_section
from medunlearn.evidence.gates import resolve_bounds
from medunlearn.evidence.membership import choose_pool
from medunlearn.evidence.metrics import GAP_KEYS, unlearning_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--cache", default=".cache/bench")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenario = load_scenario(Path(args.scenario))
    cache = Path(args.cache)
    splits = prepare_data(scenario, cache)
    cohorts = scenario_cohorts(splits, scenario)
    torch.manual_seed(0)  # as run_benchmark does before its metrics
    models = scenario_models(scenario, splits, cohorts, cache, read_only=True)
    bounds = resolve_bounds(scenario.request.reason, load_section("gates", args.params))
    cohorts = choose_pool(cohorts, models.deployed, bounds["alpha"], bounds["mia_auc_margin"])
    reference = unlearning_metrics(models.reference, cohorts)
    reference.with_reference(reference)
    named = [("reference", models.reference), ("deployed", models.deployed)]
    named += [(f"retrain {k + 1}", m) for k, m in enumerate(models.references)]
    floor = []
    print("| model | " + " | ".join(GAP_KEYS) + " | Avg Gap (pp) |")
    print("|---|" + "---|" * (len(GAP_KEYS) + 1))
    for name, model in named:
        m = unlearning_metrics(model, cohorts).with_reference(reference)
        values = " | ".join(
            "n/a" if getattr(m, k) is None else f"{getattr(m, k):.3f}" for k in GAP_KEYS
        )
        print(f"| {name} | {values} | {m.avg_gap:.2f} |")
        if name.startswith("retrain"):
            floor.append(m.avg_gap)
    if len(floor) > 1:
        print(
            f"noise floor ({len(floor)} retrains): {statistics.mean(floor):.2f} "
            f"± {statistics.stdev(floor):.2f} pp"
        )


if __name__ == "__main__":
    main()
