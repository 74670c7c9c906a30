"""GPU check: one PSG unlearning on CUDA and on CPU with the same seed; agreement and speed-up.

    python scripts/gpu_check.py [--epochs 3]

Trains a small deployed model on the embedded demo (CPU), forgets one class with the
``params.yaml`` PSG config on each device, and prints both runs' metrics, their largest
difference, and the wall-time speed-up. Exits 2 when no CUDA device is present. CUDA runs use
bf16 autocast and channels_last, so small metric differences are expected; labels of the
boundary search are compared exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from medunlearn.data import from_demo, materialise
from medunlearn.data.dataset import open_splits
from medunlearn.data.request import ForgetRequest, build_cohorts
from medunlearn.evidence.metrics import unlearning_metrics
from medunlearn.models import build_model
from medunlearn.models.training import TrainConfig, train_classifier
from medunlearn.unlearn import PSGConfig, psg_unlearn
from medunlearn.unlearn.psg import search_forget_set

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    "forget_train_acc",
    "forget_test_acc",
    "retain_train_acc",
    "retain_test_acc",
    "test_acc",
    "mia_efficacy",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3, help="deployed-model training epochs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as tmp:
        materialise(from_demo(), Path(tmp) / "demo", 28, 1)
        d = open_splits(Path(tmp) / "demo")
    cfg_train = TrainConfig(epochs=args.epochs, batch_size=64, lr=3e-3, seed=0, device="cpu")
    model = build_model("allcnn", 10, 1, 28, seed=0, width=0.5)
    model = train_classifier(model, d.train, d.val, d.info.class_names, cfg_train).model
    cohorts = build_cohorts(
        d.manifest,
        d.train,
        d.val,
        d.test,
        d.info.class_names,
        ForgetRequest("class_retirement", {"labels": ["3"]}),
    )
    base = PSGConfig.from_params(yaml.safe_load((ROOT / "params.yaml").read_text())["unlearn"])
    report = {"device": torch.cuda.get_device_name(0)}
    labels = {}
    for device in ("cuda", "cpu"):
        cfg = replace(base, device=device)
        labels[device] = search_forget_set(
            model.to(device), cohorts.forget_train, cfg, torch.device(device)
        ).y_hat.cpu()
        if device == "cuda":  # warm-up: kernel selection and allocator, not part of the timing
            psg_unlearn(model, cohorts.forget_train, cohorts.retain_train, replace(cfg, epochs=1))
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = psg_unlearn(model, cohorts.forget_train, cohorts.retain_train, cfg)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        metrics = unlearning_metrics(result.model.cpu(), cohorts).to_dict()
        report[device] = {"seconds": round(seconds, 3), **{k: metrics[k] for k in KEYS}}
        model = model.cpu()
    report["max_metric_difference"] = max(abs(report["cuda"][k] - report["cpu"][k]) for k in KEYS)
    report["boundary_label_agreement"] = float((labels["cuda"] == labels["cpu"]).float().mean())
    report["speedup"] = round(report["cpu"]["seconds"] / report["cuda"]["seconds"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
