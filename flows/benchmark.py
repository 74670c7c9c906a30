"""Flow ``benchmark``: the benchmark suite with its method runs as Prefect tasks on a Dask
cluster through prefect-dask.

    medunlearn bench benchmarks/demo_class_retirement.yaml --task-runner dask --dask-workers 2
    medunlearn bench benchmarks/*.yaml --task-runner dask --dask-address tcp://scheduler:8786
                     [--threads-per-run 1]

Without ``--task-runner`` (or with ``sequential``) the suite runs in this process, no flow
(``medunlearn.benchmark.cli``). There is no thread runner: runs sharing one process would
mix their CPU seconds and peak memory, which the tables report per run; a Dask worker
process runs one task at a time (one thread per worker). With it, each scenario's runs go in two batches (every
method's tuning grid, then the tuned points' other seeds), one ``bench-run`` task per run
with ``--threads-per-run`` torch threads (the parent's ``--threads`` is for its own
reference metrics); each run is seeded, so the accuracy and gap columns equal the
sequential ones (tests/test_triggers.py; AUCs can differ in the last digits with another
thread count). A worker writes its run into the run cache (``--cache``; share the folder
with remote workers to resume a killed benchmark) and the results come back to this
process, which writes the reports. Workers need the same checkout (a worker with other
core code refuses to run), the scenario's data at the same paths, and one thread each.
Known cost: each task carries the scenario's models and cohorts (pickled per task), so
memory in the scheduler grows with the grid on large scenarios.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.maintenance import task_runner
from medunlearn.benchmark import cli as bench_cli


@task(name="bench-run", cache_policy=NO_CACHE, persist_result=False)
def bench_run(run: Callable[[Any], Any], job: Any, threads: int) -> Any:
    """One benchmark run (``run(job)``) with ``threads`` torch CPU threads in this worker.

    Raises ``RuntimeError`` on a Dask worker with more than one thread: concurrent runs in
    one process would mix the per-run CPU seconds and peak memory the tables report."""
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


@flow(name="benchmark", log_prints=True)
def benchmark_flow(argv: list[str], threads_per_run: int = 1) -> None:
    """``medunlearn bench`` with ``argv``, every method run a ``bench-run`` task."""

    def map_runs(
        run: Callable[[Any], Any], jobs: list[Any], done: Callable[[], None]
    ) -> Sequence[Any]:
        futures = [bench_run.submit(run, job, threads_per_run) for job in jobs]
        for _ in as_completed(futures):  # the progress bar moves as each run finishes
            done()
        return [f.result() for f in futures]

    bench_cli.main(argv, map_runs=map_runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="medunlearn bench", add_help=False)
    parser.add_argument("--task-runner", choices=("sequential", "dask"), default=None)
    parser.add_argument("--dask-address", default=None)
    parser.add_argument("--dask-workers", type=int, default=None)
    parser.add_argument("--threads-per-run", type=int, default=1)
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    dask_options = ours.dask_address is not None or ours.dask_workers is not None
    if ours.task_runner in (None, "sequential") or "-h" in rest or "--help" in rest:
        if dask_options and ours.task_runner != "dask":
            parser.error("--dask-address/--dask-workers need --task-runner dask")
        bench_cli.main(rest)
        return
    if ours.dask_workers is not None and ours.dask_workers < 1:
        parser.error("--dask-workers must be at least 1")
    if ours.threads_per_run < 1:
        parser.error("--threads-per-run must be at least 1")
    runner = task_runner(
        {
            "task_runner": ours.task_runner,
            "dask_address": ours.dask_address,
            "dask_workers": ours.dask_workers or 2,
        }
    )
    benchmark_flow.with_options(task_runner=runner)(rest, ours.threads_per_run)


if __name__ == "__main__":
    main()
