"""The benchmark on Dask (flows/benchmark.py): the same tables as the sequential run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_runs_on_dask_give_the_sequential_tables(tmp_path, prefect_harness) -> None:
    """``medunlearn bench --task-runner dask``: the same scenario, its runs spread over a
    2-worker LocalCluster, gives the sequential run's numbers (runs are seeded); with the
    run cache emptied in between, every run was computed again as a ``bench-run`` task."""
    from cli.main import main

    def bench(args: list[str]) -> None:
        main(["bench", *args])

    obj = {
        "name": "tiny",
        "data": {"source": "demo", "image_size": 28, "channels": 1},
        "model": {"name": "allcnn", "kwargs": {"width": 0.25}},
        "recipe": {"epochs": 1, "lr": 0.003, "select_metric": "accuracy", "seed": 0},
        "request": {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        "seeds": [0, 1],
        "reference_models": 0,
        "grid": {"psg": {"lr": [1e-4, 1e-3]}, "finetune": {"lr": [1e-3]}},
        "methods": {"psg": {"epochs": 1}, "finetune": {"epochs": 1}},
    }
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(obj))
    cache = tmp_path / "cache"
    common = [
        str(scenario),
        "--methods",
        "psg,finetune",
        "--cache",
        str(cache),
        "--threads",
        "1",
    ]
    bench([*common, "--out", str(tmp_path / "seq")])
    shutil.rmtree(cache / "runs")  # the models stay banked; every run is computed again
    bench(
        [*common, "--out", str(tmp_path / "dask"), "--task-runner", "dask", "--dask-workers", "2"]
    )
    seq, dask = (json.loads((tmp_path / k / "tiny.json").read_text()) for k in ("seq", "dask"))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:  # the Dask pass ran each run as a task
        tasks = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="bench-run"))
        )
    assert sorted(t.state_type.value for t in tasks) == ["COMPLETED"] * 5  # 3 tuning + 2 seeds
    assert [(r["method"], r["setting"], r["seed"]) for r in dask["runs"]] == [
        (r["method"], r["setting"], r["seed"]) for r in seq["runs"]
    ]
    assert len(seq["runs"]) == 4
    keys = ("forget_train_acc", "retain_train_acc", "retain_test_acc", "test_acc", "avg_gap")
    for a, b in zip(seq["runs"], dask["runs"], strict=True):
        for key in keys:
            assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-6), (
                a["method"],
                key,
            )
    assert [t["val_tuning_gap"] for t in dask["tuning"]] == pytest.approx(
        [t["val_tuning_gap"] for t in seq["tuning"]], abs=1e-6
    )
