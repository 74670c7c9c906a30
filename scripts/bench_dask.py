"""A 6-entry maintenance sweep with the thread runner vs a 2-worker Dask LocalCluster.

    python scripts/bench_dask.py --project . [--workers 2]

Runs ``medunlearn revise`` twice on the project's data and deployed model with the
registry off (``maintain.candidate_dir`` under a temporary folder, a fresh sweep cache
each), once per task runner, on the same 6 sweep entries, and prints each run's wall
seconds, its unlearning step and whether the two runs' candidate metrics agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SWEEP = [
    {"method": "psg", "settings": {"lr": 1e-3}},
    {"method": "psg", "settings": {"lr": 3e-4}},
    {"method": "psg", "settings": {"lr": 1e-4}},
    {"method": "finetune"},
    {"method": "neggrad_plus"},
    {"method": "scrub"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default=".")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--request", default="requests/retire_digit_3.yaml")
    args = parser.parse_args()
    project = Path(args.project).resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    work = Path(tempfile.mkdtemp(prefix="medunlearn-dask-bench-"))
    results = {}
    for runner in ("threads", "dask"):
        maintain = {
            **params["maintain"],
            "sweep": SWEEP,
            "sweep_by_reason": {},
            "compose": {"enabled": False},
            "task_runner": runner,
            "max_workers": args.workers,
            "dask_workers": args.workers,
            "work_dir": str(work / runner / "cache"),
            "candidate_dir": str(work / runner / "candidate"),
            "reports": {
                k: str(work / runner / Path(v).name)
                for k, v in params["maintain"]["reports"].items()
            },
        }
        config = {**params, "maintain": maintain, "registry": {"enabled": False}}
        path = work / f"{runner}.yaml"
        path.write_text(yaml.safe_dump(config))
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "revise",
                "--params",
                str(path),
                "--request",
                args.request,
                "--json",
            ],
            cwd=project,
            capture_output=True,
            text=True,
            env={**os.environ},
        )
        wall = time.perf_counter() - start
        metrics = json.loads((work / runner / "metrics.json").read_text())
        results[runner] = {
            "rc": done.returncode,
            "wall_s": round(wall, 1),
            "unlearn_step_s": metrics["step_seconds"].get("unlearn"),
            "candidates": (work / runner / "tradeoff.csv").read_text(),  # every metric
        }
    same = results["threads"]["candidates"] == results["dask"]["candidates"]
    print(
        json.dumps(
            {r: {k: v for k, v in res.items() if k != "candidates"} for r, res in results.items()}
            | {"same_metrics": same, "sweep_entries": len(SWEEP)},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
