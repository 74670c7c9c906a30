"""The benchmark suite over scenario files: what ``medunlearn bench`` does, with no printing.

PSG's base settings come from the ``unlearn`` section of the params file *without* its
``by_reason`` overrides (the benchmark is what chooses them), the gate profiles from its
``gates`` section; everything else from the scenario (``medunlearn.benchmark.scenario``).
Method runs go one after another in this process, or wherever ``map_runs`` sends them
(``flows/benchmark.py``: Prefect tasks on a Dask cluster).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from medunlearn.benchmark.report import write_outputs
from medunlearn.benchmark.runner import calibrate_scenario, pretrain, run_benchmark
from medunlearn.benchmark.scenario import Scenario, load_scenario
from medunlearn.config import ConfigError, load_params, load_section, project_root
from medunlearn.revision.ledger import use_project_salt
from medunlearn.unlearn.methods import psg_base

MapRuns = Callable[[Callable[[Any], Any], list[Any], Callable[[], None]], Sequence[Any]]


def default_out(quick: bool) -> Path:
    """The output folder when none is named.

    Args:
        quick: a ``--quick`` run.

    Returns:
        ``reports/bench``, or ``reports/bench/quick`` for a quick run (relative paths).
    """
    return Path("reports/bench/quick" if quick else "reports/bench")


def load_scenarios(paths: Sequence[Path], quick: bool = False) -> list[Scenario]:
    """Every scenario file parsed before any work starts, so a bad one fails early.

    Args:
        paths: scenario YAML files (``benchmarks/*.yaml``).
        quick: one seed, tiny grid, short training.

    Returns:
        The scenarios in the order given.

    Raises:
        ScenarioError: a file is missing or invalid (names the file and key; raised by
            :func:`medunlearn.benchmark.scenario.load_scenario`).
    """
    return [load_scenario(p, quick=quick) for p in paths]


def run_scenarios(
    scenarios: Sequence[Scenario],
    params_path: Path,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    quick: bool = False,
    out: Path | None = None,
    cache: Path = Path(".cache/bench"),
    threads: int | None = None,
    map_runs: MapRuns | None = None,
) -> Iterator[tuple[dict[str, Any], dict[str, Path]]]:
    """Benchmark each scenario in turn and write its reports (JSON, Markdown, plots).

    Args:
        scenarios: from :func:`load_scenarios`.
        params_path: the params file whose ``unlearn`` and ``gates`` sections are used.
        methods: method names (default: every method but ``retrain``).
        seeds: seeds (default: the scenario's).
        quick: one seed, tiny grid, short training.
        out: output folder (default :func:`default_out`).
        cache: where materialised datasets and trained models are cached.
        threads: torch CPU threads (default: up to 2).
        map_runs: spreads each scenario's method runs
            (:func:`medunlearn.benchmark.runner.run_benchmark`).

    Yields:
        Per scenario, the JSON-ready result and the paths written.
    """
    torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
    out = out or default_out(quick)
    use_project_salt(load_params(params_path), project_root(params_path))  # id tokens
    unlearn = load_section("unlearn", params_path)
    gates = load_section("gates", params_path)
    for scenario in scenarios:
        result = run_benchmark(
            scenario,
            psg_base(unlearn),
            methods=methods,
            seeds=seeds,
            quick=quick,
            cache_dir=cache,
            gates_section=gates,
            map_runs=map_runs,
        )
        result["machine"] = {
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        }
        yield result, write_outputs(result, out)


def recalibrate(
    scenarios: Sequence[Scenario], params_path: Path, out: Path, cache: Path
) -> Iterator[dict[str, Any]]:
    """Recompute only each scenario's gate calibration into its existing result file.

    Args:
        scenarios: from :func:`load_scenarios`.
        params_path: the params file whose ``gates`` section is used.
        out: the folder holding ``<scenario>.json`` from an earlier run.
        cache: the dataset and model cache.

    Yields:
        Each updated result (also rewritten under ``out``).

    Raises:
        ConfigError: a scenario has no result file to add a calibration to.
    """
    gates = load_section("gates", params_path)
    for scenario in scenarios:
        path = out / f"{scenario.name}.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no result to add a calibration to; run the benchmark")
        result = json.loads(path.read_text())
        result["calibration"] = calibrate_scenario(scenario, gates, cache)
        result["pool_check"] = result["calibration"].pop("pool_check")
        write_outputs(result, out)
        yield result


def pretrain_models(scenarios: Sequence[Scenario], cache: Path) -> None:
    """Only train (or find cached) each scenario's deployed and reference models.

    Args:
        scenarios: from :func:`load_scenarios`.
        cache: the dataset and model cache.
    """
    for scenario in scenarios:
        pretrain(scenario, cache)
