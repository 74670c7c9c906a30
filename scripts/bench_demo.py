"""Benchmark: wall time of each step of ``make demo`` and the maintenance flow's overhead.

    python scripts/bench_demo.py [--out reports/bench_demo.json]
    python scripts/bench_demo.py --maintain-only   # after a first run: re-time the flow alone

Run it from the root of a fresh checkout after ``make install`` (PATH with ``.venv/bin``
first, as the Makefile sets it). It runs the pipeline's steps through DVC (the registry is
off inside DVC stages, so this times the flow without registration; ``make demo`` itself now
runs the flows directly and registers), one command each,
timing every command from outside: ``flows.prepare``, ``dvc repro train``, ``dvc repro
maintain`` and ``flows.cli show``. The maintenance flow times itself (``reports/metrics.json``:
step laps and the seconds its tasks spent computing); from both it prints

- in-flow overhead: flow seconds minus the seconds inside the unlearning, composition and
  evaluation tasks (Prefect dispatch, Great Expectations, checkpoint I/O, export, reports);
- end-to-end overhead: the whole ``dvc repro maintain`` command minus the same compute
  (adds interpreter start-up, imports, Prefect's ephemeral server, DVC hashing and commit).

Target (issue 5): orchestration overhead under 15 s on 2 cores. A sweep restored from the
result cache computes nothing, so the figures are only meaningful on a first run; the script
refuses to report when ``cached_runs`` is not 0. ``--maintain-only`` deletes the sweep's
work folder (``maintain.work_dir``, a cache) and forces ``dvc repro -f -s maintain`` (this
stage only): use it to compare set-ups, e.g. with a running Prefect server
(``PREFECT_API_URL`` set) instead of the ephemeral one each process starts. Run it in a
scratch clone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEPS = (
    ("prepare", [sys.executable, "-m", "flows.prepare"]),
    ("dvc repro train", ["dvc", "repro", "train"]),
    ("dvc repro maintain", ["dvc", "repro", "maintain"]),
    (
        "show",
        [
            sys.executable,
            "-m",
            "flows.cli",
            "show",
            "models/deployed.pt",
            "models/candidate/model.pt",
        ],
    ),
)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/bench_demo.json")
    parser.add_argument(
        "--maintain-only",
        action="store_true",
        help="delete maintain.work_dir and time `dvc repro -f -s maintain` alone",
    )
    args = parser.parse_args(argv)
    for var, value in (
        ("DO_NOT_TRACK", "1"),
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("DVC_NO_ANALYTICS", "1"),
        ("ORT_DISABLE_TELEMETRY", "1"),
    ):
        os.environ.setdefault(var, value)

    steps = STEPS
    if args.maintain_only:
        import yaml

        work_dir = yaml.safe_load(Path("params.yaml").read_text())["maintain"]["work_dir"]
        shutil.rmtree(work_dir, ignore_errors=True)
        steps = (("dvc repro maintain", ["dvc", "repro", "--force", "--single-item", "maintain"]),)
    walls = {name: round(timed(cmd), 2) for name, cmd in steps}
    metrics = json.loads(Path("reports/metrics.json").read_text())
    if metrics.get("cached_runs"):
        raise SystemExit(
            f"{metrics['cached_runs']} sweep run(s) came from the result cache: "
            "run this on a fresh checkout (or use --maintain-only) to measure"
        )
    compute = sum(metrics["compute_seconds"].values())
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "prefect_api": "server at PREFECT_API_URL"
        if os.environ.get("PREFECT_API_URL")
        else "ephemeral",
        "step_wall_seconds": walls,
        "make_demo_seconds": None if args.maintain_only else round(sum(walls.values()), 2),
        "flow_step_seconds": metrics["step_seconds"],
        "flow_compute_seconds": metrics["compute_seconds"],
        "flow_seconds": metrics["flow_seconds"],
        "in_flow_overhead_seconds": metrics["overhead_seconds"],
        "end_to_end_overhead_seconds": round(walls["dvc repro maintain"] - compute, 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in walls)
    for name, seconds in walls.items():
        print(f"{name:{width}s} {seconds:8.2f} s")
    if not args.maintain_only:
        print(f"{'make demo':{width}s} {result['make_demo_seconds']:8.2f} s")
    print(f"maintenance flow laps: {metrics['step_seconds']}")
    print(f"inside tasks (compute): {metrics['compute_seconds']}")
    print(
        f"overhead in flow {metrics['overhead_seconds']:.2f} s of {metrics['flow_seconds']:.2f} s; "
        f"end to end {result['end_to_end_overhead_seconds']:.2f} s of "
        f"{walls['dvc repro maintain']:.2f} s (target < 15 s)"
    )


if __name__ == "__main__":
    main()
