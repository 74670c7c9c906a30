"""``medunlearn bench``: run the benchmark suite on scenario files and write its reports.

    medunlearn bench benchmarks/retina_class_retirement.yaml [--methods psg scrub]
                     [--seeds 0 1 2] [--quick] [--out reports/bench] [--params params.yaml]
                     [--task-runner dask [--dask-address tcp://...] [--dask-workers 2]]

Method runs go one after another in this process, or, with ``--task-runner dask``
(``flows/benchmark.py``), as Prefect tasks on a Dask cluster.

PSG's base settings come from the ``unlearn`` section of ``params.yaml`` *without* its
``by_reason`` overrides (the benchmark is what chooses them), the gate profiles from its
``gates`` section; everything else from the scenario.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from medunlearn.benchmark.report import calibration_lines, markdown_table, write_outputs
from medunlearn.benchmark.runner import calibrate_scenario, pretrain, run_benchmark
from medunlearn.benchmark.scenario import load_scenario
from medunlearn.config import load_params, load_section, project_root
from medunlearn.revision.ledger import use_project_salt
from medunlearn.unlearn.methods import METHODS, psg_base


def calibration_lines_text(result: dict) -> str:
    return "\n".join(calibration_lines(result.get("calibration")))


def main(argv: list[str] | None = None, map_runs: Any = None) -> None:
    """Parse ``argv`` and run; ``map_runs`` spreads each scenario's method runs (see
    :func:`medunlearn.benchmark.runner.run_benchmark`; ``flows/benchmark.py`` passes one)."""
    parser = argparse.ArgumentParser(
        prog="medunlearn bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="+", type=Path, help="scenario YAML files")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="one seed, tiny grid, short training")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default reports/bench, reports/bench/quick with --quick)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/bench"),
        help="where materialised datasets are cached",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--calibration-only",
        action="store_true",
        help="recompute only the gate calibration of each scenario into its existing result",
    )
    parser.add_argument(
        "--models-only",
        action="store_true",
        help="only train (or find cached) each scenario's deployed and reference models",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    out = args.out or Path("reports/bench/quick" if args.quick else "reports/bench")
    use_project_salt(load_params(args.params), project_root(args.params))  # id tokens
    unlearn = load_section("unlearn", args.params)
    gates = load_section("gates", args.params)
    scenarios = [load_scenario(p, quick=args.quick) for p in args.scenarios]  # fail early
    if args.calibration_only:
        for scenario in scenarios:
            path = out / f"{scenario.name}.json"
            if not path.is_file():
                raise SystemExit(f"{path}: no result to add a calibration to; run the benchmark")
            result = json.loads(path.read_text())
            result["calibration"] = calibrate_scenario(scenario, gates, args.cache)
            result["pool_check"] = result["calibration"].pop("pool_check")
            write_outputs(result, out)
            print(calibration_lines_text(result))
        return
    if args.models_only:
        for scenario in scenarios:
            pretrain(scenario, args.cache)
        return
    for scenario in scenarios:
        result = run_benchmark(
            scenario,
            psg_base(unlearn),
            methods=args.methods,
            seeds=args.seeds,
            quick=args.quick,
            cache_dir=args.cache,
            gates_section=gates,
            map_runs=map_runs,
        )
        result["machine"] = {
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        }
        paths = write_outputs(result, out)
        print(markdown_table(result))
        print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
