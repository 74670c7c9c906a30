"""Probe: how robust are PSG's outer-loop settings to the deployed model's initialisation and
the CPU's kernels? (issue 26; the table is in BENCHMARKS.md, "Follow-up, 2026-12-06")

    python scripts/probe_psg_robustness.py --out rows.jsonl [--model-seeds 0 1 2 3 4]
    ONEDNN_MAX_CPU_ISA=AVX2 python scripts/probe_psg_robustness.py --out rows_avx2.jsonl
    python scripts/probe_psg_robustness.py --summarise rows.jsonl rows_avx2.jsonl

For each initialisation seed, trains the engine tests' fixture model (AllCNN width 0.25 on
the demo, 3 epochs, as ``tests/conftest.py``), retires digit 3 with PSG under every
combination of lr x forget loss x phi x retain loss x epochs (the demo revision test's inner
settings), and writes one JSON row per run: retain-test accuracy drop (points in [0, 1]) and
forgotten-class accuracy on forget-train and forget-test. ``--summarise`` prints, per setting,
the worst case over every row given (seeds x kernels).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from collections import defaultdict
from pathlib import Path

INNER = {
    "steps": 3,
    "step_size": 0.05,
    "eps": 0.1,
    "lam": 1.0,
    "lam_schedule": "inverse",
    "gamma": 0.5,
    "noise_scale": "relative",
    "on_failure": "retry",
}
GRID = {
    "lr": [1e-3, 3e-4],
    "forget_loss": ["hard", "soft"],
    "phi": [1.0, 3.0],
    "retain_loss": ["distill", "hard"],
    "epochs": [3, 5],
}


def run(out: Path, model_seeds: list[int]) -> None:
    import torch

    from medunlearn.data import from_demo, materialise
    from medunlearn.data.dataset import open_splits
    from medunlearn.data.request import ForgetRequest, build_cohorts
    from medunlearn.evidence.metrics import accuracy_on
    from medunlearn.models import build_model
    from medunlearn.models.training import TrainConfig, train_classifier
    from medunlearn.unlearn import PSGConfig, psg_unlearn

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp, out.open("a") as sink:
        materialise(from_demo(), Path(tmp) / "demo", image_size=28, channels=1)
        d = open_splits(Path(tmp) / "demo")
        request = ForgetRequest("class_retirement", {"labels": ["3"]})
        cohorts = build_cohorts(d.manifest, d.train, d.val, d.test, d.info.class_names, request)
        for seed in model_seeds:
            model = train_classifier(
                build_model("allcnn", 10, 1, 28, seed=seed, width=0.25),
                d.train,
                d.val,
                d.info.class_names,
                TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=seed),
            ).model
            base = accuracy_on(model, cohorts.retain_test)
            for values in itertools.product(*GRID.values()):
                outer = dict(zip(GRID, values, strict=True))
                cfg = PSGConfig(**INNER, **outer, temperature=2.0, device="cpu", seed=0)
                result = psg_unlearn(model, cohorts.forget_train, cohorts.retain_train, cfg)
                row = {
                    "model_seed": seed,
                    **outer,
                    "retain_drop": round(base - accuracy_on(result.model, cohorts.retain_test), 4),
                    "forget_train": round(accuracy_on(result.model, cohorts.forget_train), 4),
                    "forget_test": round(accuracy_on(result.model, cohorts.forget_test), 4),
                }
                sink.write(json.dumps(row) + "\n")
                sink.flush()


def summarise(files: list[Path]) -> None:
    worst: dict[tuple, list[dict]] = defaultdict(list)
    for f in files:
        for line in f.read_text().splitlines():
            row = json.loads(line)
            worst[tuple(row[k] for k in GRID)].append(row)
    print(
        "| "
        + " | ".join(GRID)
        + " | cases | max retain drop | max forget-test | max forget-train |"
    )
    print("|" + "---|" * (len(GRID) + 4))
    for key, rows in sorted(worst.items()):
        cells = [str(v) for v in key] + [
            str(len(rows)),
            f"{max(r['retain_drop'] for r in rows):.3f}",
            f"{max(r['forget_test'] for r in rows):.3f}",
            f"{max(r['forget_train'] for r in rows):.3f}",
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="JSON-lines file to append rows to")
    parser.add_argument("--model-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--summarise", type=Path, nargs="*", help="row files to summarise")
    args = parser.parse_args()
    if args.summarise:
        summarise(args.summarise)
    elif args.out:
        run(args.out, args.model_seeds)
    else:
        parser.error("give --out FILE (to run) or --summarise FILE ...")


if __name__ == "__main__":
    main()
