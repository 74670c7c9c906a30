"""Benchmark: PSG vs Boundary Shrink vs a retrain reference, on real clinical scenarios.

    python scripts/bench_unlearn.py [--only retina ham] [--out reports/bench_unlearn.json]

For each scenario: train the deployed model, train the retrain reference on retain-train
(timed: the cost unlearning is meant to avoid), then run each method on the deployed model
and report forget/retain/test accuracy, both MIAs, Avg Gap to the retrain reference and the
wall-time ratio unlearning / retraining, all measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from medunlearn.atomic import write_json
from medunlearn.data import from_csv, from_medmnist, materialise
from medunlearn.data.dataset import open_splits
from medunlearn.data.request import ForgetRequest, build_cohorts
from medunlearn.evidence.metrics import unlearning_metrics
from medunlearn.models import build_model
from medunlearn.models.training import TrainConfig, train_classifier
from medunlearn.unlearn import PSGConfig, psg_unlearn

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDUNLEARN_SHARED_DATA", ROOT.parent / "shared" / "data"))
AUG = {"flip": True, "rotate_deg": 15, "shift": 0.05}

SCENARIOS = {
    # RetinaMNIST grade 2 (moderate NPDR): the class the reference study forgot.
    "retina": dict(
        source=lambda: from_medmnist(SHARED / "medmnist" / "retinamnist.npz"),
        size=28,
        channels=3,
        request=ForgetRequest("class_retirement", {"labels": ["2"]}),
        recipe={"epochs": 30, "lr": 1e-3, "augmentation": AUG},
    ),
    "ham": dict(
        source=lambda: from_csv(
            SHARED / "ham10000_sites" / "manifest.csv", group_column="lesion_id"
        ),
        size=64,
        channels=3,
        request=ForgetRequest("device_deprecation", {"devices": ["vienna_dias"]}),
        recipe={"epochs": 30, "lr": 1e-3, "augmentation": AUG, "class_weights": "balanced"},
    ),
}


def methods() -> dict[str, PSGConfig]:
    default = PSGConfig.from_params(yaml.safe_load((ROOT / "params.yaml").read_text())["unlearn"])
    shrink = PSGConfig(
        steps=1, step_size=0.1, eps=0.1, lam=0.0, gamma=0.0
    )  # paper: SGD 1e-5, 10 passes
    return {
        "boundary_shrink (paper lr 1e-5)": shrink,
        "boundary_shrink (lr 1e-3, phi 1 distill)": replace(
            shrink, lr=1e-3, phi=1.0, retain_loss="distill"
        ),
        "psg (paper lr 1e-5)": replace(default, lr=1e-5, phi=0.0),
        "psg default (params.yaml)": default,
    }


def row(name: str, metrics, seconds: float, retrain_seconds: float, stats=None) -> dict:
    d = metrics.to_dict()
    return {
        "method": name,
        "forget_train_acc": d["forget_train_acc"],
        "forget_test_acc": d["forget_test_acc"],
        "retain_train_acc": d["retain_train_acc"],
        "retain_test_acc": d["retain_test_acc"],
        "test_acc": d["test_acc"],
        "mia_auc": d["membership"]["auc"],
        "mia_efficacy": d["mia_efficacy"],
        "avg_gap": d["avg_gap"],
        "seconds": round(seconds, 2),
        "time_ratio": round(seconds / retrain_seconds, 4),
        "stats": {k: v for k, v in (stats or {}).items() if k != "config"},
    }


def run_scenario(name: str, tmp: Path) -> dict:
    s = SCENARIOS[name]
    materialise(s["source"](), tmp / name, s["size"], s["channels"])
    d = open_splits(tmp / name)
    names = d.info.class_names
    cohorts = build_cohorts(d.manifest, d.train, d.val, d.test, names, s["request"])
    cfg = TrainConfig(**{"batch_size": 64, "seed": 0, "select_metric": "accuracy", **s["recipe"]})

    def train(train_set, val_set):
        model = build_model(
            "allcnn", len(names), d.info.channels, d.info.image_size, seed=0, width=0.5
        )
        start = time.perf_counter()
        trained = train_classifier(model, train_set, val_set, names, cfg).model
        return trained, time.perf_counter() - start

    deployed, deployed_seconds = train(d.train, d.val)
    retrain, retrain_seconds = train(cohorts.retain_train, cohorts.retain_val)
    ref = unlearning_metrics(retrain, cohorts)
    ref.with_reference(ref)
    rows = [
        row("retrain (reference)", ref, retrain_seconds, retrain_seconds),
        row(
            "deployed (no unlearning)",
            unlearning_metrics(deployed, cohorts).with_reference(ref),
            0.0,
            retrain_seconds,
        ),
    ]
    for label, psg_cfg in methods().items():
        start = time.perf_counter()
        result = psg_unlearn(deployed, cohorts.forget_train, cohorts.retain_train, psg_cfg)
        seconds = time.perf_counter() - start
        rows.append(
            row(
                label,
                unlearning_metrics(result.model, cohorts).with_reference(ref),
                seconds,
                retrain_seconds,
                result.stats,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "scenario": name,
        "request": s["request"].__dict__,
        "counts": cohorts.masks.counts,
        "deployed_train_seconds": round(deployed_seconds, 1),
        "retrain_seconds": round(retrain_seconds, 1),
        "rows": rows,
    }


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=sorted(SCENARIOS))
    parser.add_argument("--out", default="reports/bench_unlearn.json")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            results.append(run_scenario(name, Path(tmp)))
    machine = {
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    write_json(args.out, {"machine": machine, "results": results})
    for r in results:
        print(f"\n### {r['scenario']} {r['counts']} (retrain {r['retrain_seconds']} s)\n")
        print(
            "| method | forget-train | forget-test | retain-train | retain-test | test "
            "| MIA AUC | MIA-eff. | Avg Gap | s | t/retrain |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for x in r["rows"]:
            print(
                f"| {x['method']} | {fmt(x['forget_train_acc'])} | {fmt(x['forget_test_acc'])} | "
                f"{fmt(x['retain_train_acc'])} | {fmt(x['retain_test_acc'])} | {fmt(x['test_acc'])} | "
                f"{fmt(x['mia_auc'])} | {fmt(x['mia_efficacy'])} | {fmt(x['avg_gap'])} | {x['seconds']:.1f} | "
                f"{x['time_ratio']:.3f} |"
            )


if __name__ == "__main__":
    main()
