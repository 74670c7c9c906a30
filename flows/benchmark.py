"""Flow ``benchmark``: the benchmark suite, its method runs as Prefect tasks on Dask.

The runs go to a Dask cluster through prefect-dask::

    medunlearn bench benchmarks/demo_class_retirement.yaml --task-runner dask --dask-workers 2
    medunlearn bench benchmarks/*.yaml --task-runner dask --dask-address tcp://scheduler:8786
                     [--threads-per-run 1]

Without ``--task-runner`` (or with ``sequential``) the suite runs in this process, no flow
(``medunlearn.benchmark.suite``). There is no thread runner: runs sharing one process would
mix their CPU seconds and peak memory, which the tables report per run; a Dask worker
process runs one task at a time (one thread per worker). With it, each scenario's runs go in
two batches (every method's tuning grid, then the tuned points' other seeds), one ``bench-
run`` task per run with ``--threads-per-run`` torch threads (the parent's ``--threads`` is
for its own reference metrics); each run is seeded, so the accuracy and gap columns equal
the sequential ones (tests/test_benchmark_flow.py; AUCs can differ in the last digits with
another thread count). A worker writes its run into the run cache (``--cache``; share the
folder with remote workers to resume a killed benchmark) and the results come back to this
process, which writes the reports. Workers need the same checkout (a worker with other core
code refuses to run), the scenario's data at the same paths, and one thread each. Known
cost: each task carries the scenario's models and cohorts (pickled per task), so memory in
the scheduler grows with the grid on large scenarios.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.runners import task_runner
from medunlearn.benchmark.suite import load_scenarios, run_scenarios


@task(name="bench-run", cache_policy=NO_CACHE, persist_result=False)
def bench_run(run: Callable[[Any], Any], job: Any, threads: int) -> Any:
    """One benchmark run (``run(job)``) with ``threads`` torch CPU threads in this worker.

    Args:
        run: the runner's per-run function (``runner.run_benchmark``'s ``attempt``).
        job: ``(method, grid point, seed)``.
        threads: torch CPU threads for the run.

    Returns:
        ``run(job)``: the run's record, or a divergence's message.

    Raises:
        RuntimeError: on a Dask worker with more than one thread (concurrent runs in one
            process would mix the per-run CPU seconds and peak memory the tables report).
    """
    import torch

    try:
        from distributed import get_worker

        worker_threads = get_worker().state.nthreads
    except (ImportError, ValueError):  # not on a Dask worker
        worker_threads = 1
    if worker_threads != 1:
        raise RuntimeError(
            f"benchmark runs need Dask workers with one thread (this one has {worker_threads}): "
            "start them with `dask worker ... --nthreads 1`"
        )
    torch.set_num_threads(threads)
    return run(job)


@flow(name="benchmark", flow_run_name="bench-{quick_name}", log_prints=True)
def benchmark_flow(
    scenarios: list[str],
    params_path: str = "params.yaml",
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    quick: bool = False,
    out: str | None = None,
    cache: str = ".cache/bench",
    threads: int | None = None,
    threads_per_run: int = 1,
    quick_name: str = "full",
) -> list[dict[str, Any]]:
    """The suite on ``scenarios``, every method run a ``bench-run`` task.

    Args:
        scenarios: scenario YAML files.
        params_path: the params file (``unlearn`` and ``gates`` sections).
        methods: method names (default: every method but ``retrain``).
        seeds: seeds (default: the scenario's).
        quick: one seed, tiny grid, short training.
        out: output folder (default ``reports/bench``, ``reports/bench/quick``).
        cache: the dataset, model and run cache.
        threads: torch threads of this process (its reference metrics).
        threads_per_run: torch threads of each run on its worker.
        quick_name: the flow run's name part (``quick`` or ``full``).

    Returns:
        Each scenario's result, as written under ``out``.
    """

    def map_runs(
        run: Callable[[Any], Any], jobs: list[Any], done: Callable[[], None]
    ) -> Sequence[Any]:
        futures = [bench_run.submit(run, job, threads_per_run) for job in jobs]
        for _ in as_completed(futures):  # the progress bar moves as each run finishes
            done()
        return [f.result() for f in futures]

    loaded = load_scenarios([Path(s) for s in scenarios], quick=quick)
    found = run_scenarios(
        loaded,
        Path(params_path),
        methods,
        seeds,
        quick,
        Path(out) if out else None,
        Path(cache),
        threads,
        map_runs,
    )
    return [result for result, _ in found]


def run_on_dask(
    scenarios: list[str],
    params_path: str,
    methods: list[str] | None,
    seeds: list[int] | None,
    quick: bool,
    out: str,
    cache: str,
    threads: int | None,
    threads_per_run: int,
    dask_address: str | None,
    dask_workers: int,
) -> list[dict[str, Any]]:
    """:func:`benchmark_flow` on a Dask cluster.

    Args:
        scenarios: scenario YAML files.
        params_path: the params file (``unlearn`` and ``gates`` sections).
        methods: method names (None: every method but ``retrain``).
        seeds: seeds (None: the scenario's).
        quick: one seed, tiny grid, short training.
        out: output folder.
        cache: the dataset, model and run cache (share it with remote workers).
        threads: torch threads of this process (its reference metrics).
        threads_per_run: torch threads of each run on its worker.
        dask_address: an existing scheduler (``tcp://host:8786``); None: a temporary local
            cluster.
        dask_workers: the local cluster's one-thread worker processes.

    Returns:
        Each scenario's result.
    """
    runner = task_runner(
        {"task_runner": "dask", "dask_address": dask_address, "dask_workers": dask_workers}
    )
    with tags("medunlearn", "bench"):
        return benchmark_flow.with_options(task_runner=runner)(
            scenarios,
            params_path,
            methods,
            seeds,
            quick,
            out,
            cache,
            threads,
            threads_per_run,
            "quick" if quick else "full",
        )
