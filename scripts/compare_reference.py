"""Side by side with the paper's reference code: RetinaMNIST class retirement (issue 26).

    git clone https://github.com/monkeygobah/unlearning_langevin /tmp/reference
    python scripts/compare_reference.py --reference /tmp/reference [--params params.yaml]

Nahass et al.'s public code (``boundary_unlearning.boundary_shrink`` with its
``adv_generator.FGSM``) is imported from the given checkout and run *unchanged* on the same
trained model as ours: its data helpers (``utils``, ``trainer``, ``make_dataloaders``,
``models``: torchvision, timm and medmnist loaders this comparison does not use) are replaced
by small stand-ins for the three names it calls (``eval``, ``get_forget_loader``,
``init_params``). It expects images normalised with the constants its FGSM hard-codes, so it
gets them normalised and the model is wrapped to undo exactly that normalisation: its attack
then moves [0, 1] pixels by its ``bound`` as intended (the most favourable reading of it).

Protocol (the issue's comparison): AllCNN at full width (``filters_percentage`` 1), the
reference recipe (SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 64, 15 epochs, no
augmentation), forget every grade-2 image; deployed model and retrain reference trained once
(cached in the benchmark's model bank under ``--cache``), plus ``--references`` more
retrains for the noise floor. Rows:

- reference Boundary Shrink: ``gamma = 0, lamda = 0``, bound 0.1, 10 passes (its defaults;
  its outer SGD lr 1e-5 is hard-coded; BatchNorm in train mode, as the code runs it);
- reference PSG: ``gamma = 1e-2, lamda = 1e-3``, normal noise, otherwise the same;
- ours: every entry of the shipped class-retirement sweep (``params.yaml``), and our Boundary
  Shrink special case (one step of 0.1, lambda = gamma = 0) with the shipped outer settings.

Metrics are ours for every row (``medunlearn.evidence.metrics.unlearning_metrics`` against the
retrain reference): forget-train and forgotten-class test accuracy, retain-test accuracy,
Avg Gap (SalUn's, percentage points) and the time ratio (method seconds / retrain seconds;
the reference's own timer, which excludes its evaluation). Results go to ``--out`` as JSON
and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medunlearn.benchmark.reference import reference_scenario

# the constants adv_generator.AttackBase hard-codes (its mean's third value as written there)
REF_MEAN = (0.4914, 0.4822, 0.2265)
REF_STD = (0.2023, 0.1994, 0.2010)
REFERENCE_ROWS = {
    "reference boundary_shrink (gamma 0, lambda 0)": {"gamma": 0.0, "lamda": 0.0},
    "reference psg (gamma 1e-2, lambda 1e-3)": {"gamma": 1e-2, "lamda": 1e-3},
}


class ReferenceInput(nn.Module):
    """Takes images normalised with the reference's constants, hands [0, 1] pixels to ours."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(REF_MEAN[:channels]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(REF_STD[:channels]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.std + self.mean)


def _loader(images: Any, channels: int, shuffle: bool, seed: int) -> DataLoader:
    mean = torch.tensor(REF_MEAN[:channels]).view(1, -1, 1, 1)
    std = torch.tensor(REF_STD[:channels]).view(1, -1, 1, 1)
    x = (images.all_images() - mean) / std
    return DataLoader(
        TensorDataset(x, images.labels.long()),
        batch_size=64,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed),
    )


def import_reference(path: Path, test_loaders: tuple[DataLoader, DataLoader]) -> Any:
    """``boundary_unlearning`` from the reference checkout, its unused helpers stubbed."""
    if not (path / "boundary_unlearning.py").is_file():
        raise SystemExit(f"{path}: no boundary_unlearning.py (clone the reference code there)")

    def evaluate(model, data_loader, device="cpu", **_: Any):
        model.eval()
        hit = total = 0
        with torch.no_grad():
            for x, y in data_loader:
                hit += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
                total += len(y)
        return None, torch.tensor(hit / max(total, 1))

    stubs = {
        "utils": {},
        "trainer": {"eval": evaluate, "loss_picker": None, "optimizer_picker": None},
        "models": {"init_params": None},
        "make_dataloaders": {
            "get_forget_loader": lambda dt, forget_class: test_loaders,
            "__all__": ["get_forget_loader"],
        },
    }
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    sys.path.insert(0, str(path))
    return importlib.import_module("boundary_unlearning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="reference checkout")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scenario", default="benchmarks/retina_class_retirement.yaml")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--references", type=int, default=1, help="extra retrains (floor)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench"))
    parser.add_argument("--out", type=Path, default=Path("reports/compare_reference.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from medunlearn.benchmark.runner import (
        method_config,
        prepare_data,
        scenario_cohorts,
        scenario_models,
    )
    from medunlearn.config import load_section
    from medunlearn.evidence.metrics import unlearning_metrics
    from medunlearn.unlearn.methods import run_method
    from medunlearn.unlearn.sweep import sweep_configs

    scenario = reference_scenario(args.scenario, args.width)
    splits = prepare_data(scenario, args.cache)
    cohorts = scenario_cohorts(splits, scenario)
    channels = splits.info.channels
    print(f"cohorts {cohorts.masks.counts}", flush=True)
    models = scenario_models(scenario, splits, cohorts, args.cache, n_references=args.references)
    retrain_s = models.reference_seconds
    print(f"deployed {models.deployed_seconds:.1f} s, retrain {retrain_s:.1f} s", flush=True)
    ref = unlearning_metrics(models.reference, cohorts)
    ref.with_reference(ref)
    class_index = cohorts.class_names.index(scenario.request.selector["labels"][0])

    rows: list[dict[str, Any]] = []

    def add(label: str, model: nn.Module, seconds: float | None) -> None:
        m = unlearning_metrics(model, cohorts).with_reference(ref)
        rows.append(
            {
                "method": label,
                "forget_train_acc": m.forget_train_acc,
                "forget_test_acc": m.forget_test_acc,
                "retain_test_acc": m.retain_test_acc,
                "test_acc": m.test_acc,
                "mia_efficacy": m.mia_efficacy,
                "avg_gap_pp": m.avg_gap,
                "seconds": seconds,
                "time_ratio": None if seconds is None else seconds / retrain_s,
            }
        )
        r = rows[-1]
        print(
            f"{label}: forget-test {r['forget_test_acc']:.3f} Avg Gap {r['avg_gap_pp']:.1f} pp"
            + ("" if seconds is None else f" {seconds:.1f} s ({r['time_ratio']:.3f})"),
            flush=True,
        )

    add("retrain (reference)", models.reference, retrain_s)
    for k, extra in enumerate(models.references):
        add(f"retrain, seed +{k + 1} (noise floor)", extra, None)
    add("deployed (no unlearning)", models.deployed, None)

    test_loaders = (
        _loader(cohorts.forget_test, channels, False, 0),
        _loader(cohorts.retain_test, channels, False, 0),
    )
    reference = import_reference(args.reference.resolve(), test_loaders)
    forget_loader = _loader(cohorts.forget_train, channels, True, 0)
    remain_loader = _loader(cohorts.retain_train, channels, True, 1)
    with tempfile.TemporaryDirectory() as tmp:
        for label, knobs in REFERENCE_ROWS.items():
            torch.manual_seed(0)
            wrapped = ReferenceInput(copy.deepcopy(models.deployed), channels)
            out, _, _, seconds = reference.boundary_shrink(
                wrapped,
                forget_loader,
                None,
                None,
                test_loaders[0],
                torch.device("cpu"),
                bound=0.1,
                poison_epoch=10,
                forget_class=class_index,
                dist="normal",
                output_name=str(Path(tmp) / "reference"),
                train_remain_loader=remain_loader,
                remain_reg_param=0.0,
                **knobs,
            )
            add(label, out.model.eval(), seconds)

    unlearn = load_section("unlearn", args.params)
    maintain = load_section("maintain", args.params)
    shipped = sweep_configs(maintain, unlearn, "class_retirement")
    for entry in shipped:
        cfg = {k: v for k, v in entry["config"].items() if k != "method"}
        start = time.perf_counter()
        model = run_method(entry["config"]["method"], models.deployed, cohorts, cfg)
        add(f"ours: shipped sweep '{entry['name']}'", model, time.perf_counter() - start)
    psg_base = {k: v for k, v in shipped[0]["config"].items() if k != "method"}
    cfg = method_config(scenario, "boundary_shrink", psg_base, {}, 0)
    start = time.perf_counter()
    model = run_method("boundary_shrink", models.deployed, cohorts, cfg)
    add("ours: boundary_shrink (shipped outer settings)", model, time.perf_counter() - start)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"counts": cohorts.masks.counts, "rows": rows}, indent=2))
    print("\n| method | forget-train | forget-test | retain-test | Avg Gap (pp) | s | t/retrain |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["forget_train_acc"], r["forget_test_acc"], r["retain_test_acc"]]
        sec = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        ratio = "" if r["time_ratio"] is None else f"{r['time_ratio']:.3f}"
        print(
            f"| {r['method']} | "
            + " | ".join(f"{c:.3f}" for c in cells)
            + f" | {r['avg_gap_pp']:.1f} | {sec} | {ratio} |"
        )


if __name__ == "__main__":
    main()
