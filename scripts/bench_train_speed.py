"""Benchmark: wall time and test accuracy of the two reference trainings of issue 25.

    python scripts/bench_train_speed.py [--only demo ham32 retina] [--repeats 1] [--seeds 0 1 2]
        [--set cpu_bf16=true ...] [--out FILE]

``retina``: the RetinaMNIST scenario's recipe (AllCNN width 0.5, 28 px, 30 epochs), a dataset
the ``cpu_bf16`` default was not chosen on. ``demo``: the demo deployed model exactly as
``params.yaml``'s ``train`` section trains it (AllCNN width 0.25, 28 px, 8 epochs). ``ham32``: the HAM10000 recipe of
``examples/ham.params.yaml`` (AllCNN width 0.5, balanced class weights, flip / 15 deg /
0.05 shift, 30 epochs) at 32 px on the shared 689-image subset. Run it at two commits
(``git worktree add /tmp/before REV`` and ``PYTHONPATH=/tmp/before python
scripts/bench_train_speed.py``) to compare code on the same machine, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

import medunlearn
from medunlearn.data import from_csv, from_demo, materialise
from medunlearn.data.dataset import open_splits
from medunlearn.data.sources import load_source
from medunlearn.models import build_model
from medunlearn.models.evaluation import evaluate
from medunlearn.models.training import TrainConfig, train_classifier

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDUNLEARN_SHARED_DATA", REPO.parent / "shared" / "data"))


def recipes() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    ham = yaml.safe_load((REPO / "examples" / "ham.params.yaml").read_text())["train"]
    retina = yaml.safe_load((REPO / "benchmarks" / "retina_class_retirement.yaml").read_text())
    retina_data = {**retina["data"], "path": str(SHARED / "medmnist" / "retinamnist.npz")}
    return {
        "retina": (  # held out from the choice of cpu_bf16 (issue 25): the scenario's recipe
            lambda: load_source(retina_data),
            28,
            3,
            {
                "model": retina["model"]["name"],
                "model_kwargs": retina["model"]["kwargs"],
                **retina["recipe"],
            },
        ),
        "demo": (from_demo, 28, 1, params),
        "ham32": (
            lambda: from_csv(SHARED / "ham10000_sites" / "manifest.csv", group_column="lesion_id"),
            32,
            3,
            ham,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=["demo", "ham32"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=None,
        help="train.seed values (default: the recipe's)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override train settings (YAML values), e.g. cpu_bf16=true",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            make, size, channels, section = recipes()[name]
            target = Path(tmp) / name
            materialise(make(), target, image_size=size, channels=channels)
            data = open_splits(target)
            known = set(TrainConfig.__dataclass_fields__)
            overrides = {}
            for item in args.set:
                key, _, value = item.partition("=")
                if key not in known:
                    parser.error(f"--set {item}: '{key}' is not a train setting")
                overrides[key] = yaml.safe_load(value)
            base = {k: v for k, v in {**section, **overrides}.items() if k in known}
            seeds = args.seeds if args.seeds is not None else [base.get("seed", 0)]
            for seed, _ in [(s, r) for s in seeds for r in range(args.repeats)]:
                cfg = TrainConfig(**{**base, "seed": seed})
                model = build_model(
                    section["model"],
                    len(data.info.class_names),
                    channels,
                    size,
                    seed=cfg.seed,
                    **section.get("model_kwargs", {}),
                )
                start = time.perf_counter()
                result = train_classifier(model, data.train, data.val, data.info.class_names, cfg)
                seconds = time.perf_counter() - start
                test = evaluate(result.model, data.test, data.info.class_names)
                row = {
                    "run": name,
                    "code": str(Path(medunlearn.__file__).resolve().parents[1]),
                    "n_train": len(data.train),
                    "epochs": cfg.epochs,
                    "seed": cfg.seed,
                    "overrides": overrides,
                    "seconds": round(seconds, 2),
                    "seconds_per_epoch": round(seconds / cfg.epochs, 3),
                    "test_accuracy": round(test["accuracy"], 4),
                    "test_balanced_accuracy": round(test["balanced_accuracy"], 4),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
