"""The task runners flows run their mapped tasks on: threads, or Dask through prefect-dask."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner


def task_runner(maintain: dict[str, Any]):
    """The task runner a ``maintain``-like section names.

    Args:
        maintain: ``task_runner`` (``threads`` with ``max_workers``, default 2; or ``dask``
            with ``dask_address``, else a local cluster of ``dask_workers`` one-thread
            processes, default 2).

    Returns:
        A Prefect task runner.

    Raises:
        RuntimeError: ``dask`` without the prefect-dask package.
        ValueError: an unknown ``task_runner``.
    """
    kind = maintain.get("task_runner", "threads")
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=int(maintain.get("max_workers", 2)))
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError(
                "maintain.task_runner 'dask' needs the prefect-dask package"
            ) from exc
        address = maintain.get("dask_address")
        if address:  # an existing scheduler (e.g. GPU workers, README "Scale")
            return DaskTaskRunner(address=str(address))
        return DaskTaskRunner(  # a temporary local cluster of worker processes
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": int(maintain.get("dask_workers", 2)),
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    raise ValueError(f"maintain.task_runner must be threads or dask, not '{kind}'")
