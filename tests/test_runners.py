"""Task runners (flows/runners.py): the Dask runner gives the thread runner's sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from projects import LENIENT, SWEEP, make_project

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dask_runner_gives_the_thread_runners_sweep(
    tmp_path, prefect_harness, demo_dir, demo_model
):
    """Same seeds, same sweep: a 2-worker LocalCluster and the thread pool agree."""
    from flows.maintenance import maintenance_flow
    from flows.runners import task_runner

    request = {"reason": "class_retirement", "selector": {"labels": ["3"]}}
    results = {}
    for kind in ("threads", "dask"):
        tmp = tmp_path / kind
        tmp.mkdir()
        params = make_project(
            tmp,
            demo_dir,
            demo_model,
            request,
            gates={"class_retirement": {"max_forget_acc": 1.0, **LENIENT}},
            sweep=SWEEP,
            compose={"enabled": False},
            task_runner=kind,
            dask_workers=2,
        )
        maintain = yaml.safe_load(params.read_text())["maintain"]
        runner = task_runner(maintain)
        assert (
            type(runner).__name__
            == {"threads": "ThreadPoolTaskRunner", "dask": "DaskTaskRunner"}[kind]
        )
        flow = maintenance_flow.with_options(task_runner=runner)
        results[kind] = {c["name"]: c["metrics"] for c in flow(str(params))["candidates"]}
    assert set(results["dask"]) == {"psg-a", "psg-b"}
    for name, metrics in results["threads"].items():
        for key in ("forget_train_acc", "retain_train_acc", "retain_test_acc", "test_acc"):
            assert results["dask"][name][key] == metrics[key], (name, key)
