"""Benchmark: deployed-model quality and training speed on the shared medical datasets.

    python scripts/bench_train.py [--only retina-allcnn ...] [--out reports/bench_train.json]

Materialises each dataset into a temporary folder (never into data/), trains with the
recipe below, and prints test accuracy, balanced accuracy, macro AUC and seconds per epoch.
Targets (issue 2): RetinaMNIST test accuracy >= 0.50, PneumoniaMNIST subset >= 0.85.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from medunlearn.atomic import write_json
from medunlearn.data import from_csv, from_medmnist, materialise
from medunlearn.data.dataset import open_splits
from medunlearn.models import build_model
from medunlearn.models.evaluation import evaluate
from medunlearn.models.training import TrainConfig, train_classifier

SHARED = Path(
    os.environ.get(
        "MEDUNLEARN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)

AUG_FUNDUS = {"flip": True, "rotate_deg": 15, "shift": 0.05}
AUG_XRAY = {"flip": False, "rotate_deg": 10, "shift": 0.05}
RUNS = {
    "retina-allcnn": (
        "retina",
        "allcnn",
        {"width": 0.5},
        {"epochs": 30, "lr": 1e-3, "augmentation": AUG_FUNDUS},
    ),
    "retina-resnet18": (
        "retina",
        "resnet18",
        {},
        {"epochs": 20, "lr": 1e-3, "augmentation": AUG_FUNDUS},
    ),
    "pneumonia-allcnn": (
        "pneumonia",
        "allcnn",
        {"width": 0.5},
        {"epochs": 15, "lr": 1e-3, "augmentation": AUG_XRAY},
    ),
    "ham-allcnn": (
        "ham",
        "allcnn",
        {"width": 0.5},
        {"epochs": 30, "lr": 1e-3, "augmentation": AUG_FUNDUS, "class_weights": "balanced"},
    ),
}


def sources(root: Path) -> dict:
    return {
        "retina": (lambda: from_medmnist(SHARED / "medmnist" / "retinamnist.npz"), 28, 3),
        "pneumonia": (
            lambda: from_medmnist(SHARED / "medmnist" / "pneumoniamnist_subset.npz"),
            28,
            1,
        ),
        "ham": (
            lambda: from_csv(SHARED / "ham10000_sites" / "manifest.csv", group_column="lesion_id"),
            64,
            3,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), default=sorted(RUNS))
    parser.add_argument("--out", default="reports/bench_train.json")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        built: dict[str, Path] = {}
        for name in args.only:
            dataset, model_name, kwargs, recipe = RUNS[name]
            if dataset not in built:
                make, size, channels = sources(Path(tmp))[dataset]
                materialise(make(), Path(tmp) / dataset, size, channels)
                built[dataset] = Path(tmp) / dataset
            data = open_splits(built[dataset])
            cfg = TrainConfig(
                **{"batch_size": 64, "seed": 0, "select_metric": "accuracy", **recipe}
            )
            model = build_model(
                model_name,
                len(data.info.class_names),
                data.info.channels,
                data.info.image_size,
                seed=0,
                **kwargs,
            )
            start = time.perf_counter()
            result = train_classifier(model, data.train, data.val, data.info.class_names, cfg)
            test = evaluate(result.model, data.test, data.info.class_names)
            row = {
                "run": name,
                "model": model_name,
                "kwargs": kwargs,
                "epochs": cfg.epochs,
                "best_epoch": result.best_epoch,
                "n_train": len(data.train),
                "n_test": len(data.test),
                "test_accuracy": round(test["accuracy"], 4),
                "test_balanced_accuracy": round(test["balanced_accuracy"], 4),
                "test_macro_auc": round(test["macro_auc"], 4),
                "seconds_per_epoch": round(result.seconds_per_epoch, 2),
                "seconds_total": round(time.perf_counter() - start, 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    machine = {
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    write_json(args.out, {"machine": machine, "results": results})
    print(
        "\n| run | test acc | bal acc | macro AUC | s/epoch | epochs (best) |\n|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['run']} | {r['test_accuracy']:.3f} | {r['test_balanced_accuracy']:.3f} | "
            f"{r['test_macro_auc']:.3f} | {r['seconds_per_epoch']:.1f} | {r['epochs']} ({r['best_epoch']}) |"
        )


if __name__ == "__main__":
    main()
