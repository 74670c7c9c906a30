"""The benchmark suite: scenario files, the tuning protocol, reports, and the quick command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medunlearn.benchmark import DEFAULT_GRIDS, ScenarioError, load_scenario
from medunlearn.benchmark.report import best_method, markdown_table
from medunlearn.benchmark.runner import method_config
from medunlearn.unlearn.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((REPO / "benchmarks").glob("*.yaml"))


def write(tmp_path: Path, obj: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj))
    return path


def minimal() -> dict:
    return {
        "name": "tiny",
        "data": {"source": "demo", "image_size": 28, "channels": 1},
        "model": {"name": "allcnn", "kwargs": {"width": 0.25}},
        "recipe": {"epochs": 2, "lr": 0.003, "select_metric": "accuracy", "seed": 0},
        "request": {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        "seeds": [0, 1],
        "quick": {"recipe": {"epochs": 1}},
    }


def test_every_method_has_a_tuning_grid_of_at_most_two_keys() -> None:
    assert set(DEFAULT_GRIDS) == set(METHODS)
    assert all(len(g) <= 2 for g in DEFAULT_GRIDS.values() if isinstance(g, dict))


def test_psg_grid_tunes_the_forget_loss_temperature_and_phi() -> None:
    grid = DEFAULT_GRIDS["psg"]
    assert {p["forget_loss"] for p in grid} == {"hard", "soft", "topk"}
    assert {p.get("temperature", 1.0) for p in grid} >= {1.0, 2.0}
    assert {p["phi"] for p in grid} == {1.0, 0.3, 3.0}
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)  # no duplicate points


def test_scenarios_cover_every_reason() -> None:
    reasons = [load_scenario(p).request.reason for p in SCENARIOS]
    assert len(SCENARIOS) == 7
    assert set(reasons) == {
        "class_retirement",
        "device_deprecation",
        "consent_withdrawal",
        "outlier_removal",
    }
    consent = [load_scenario(p) for p in SCENARIOS if "consent" in p.stem]
    assert all(s.reference_models >= 19 for s in consent)  # 20 retrains calibrate the gate


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_point_at_real_data(path: Path, shared_data: Path) -> None:
    scenario = load_scenario(path)
    if scenario.data["source"] != "demo":
        data_file = (REPO / scenario.data["path"]).resolve()
        assert data_file.is_file(), f"{path.name}: {data_file} missing"


def test_quick_applies_overrides_and_keeps_one_seed(tmp_path: Path) -> None:
    path = write(tmp_path, minimal())
    full, quick = load_scenario(path), load_scenario(path, quick=True)
    assert full.recipe["epochs"] == 2 and quick.recipe["epochs"] == 1
    assert quick.recipe["lr"] == 0.003  # deep merge keeps the rest
    assert full.seeds == [0, 1] and quick.seeds == [0]
    assert len(full.grid_for("psg")) == 27 and len(quick.grid_for("psg")) == 2
    assert len(full.grid_for("neggrad_plus")) == 4 and len(quick.grid_for("neggrad_plus")) == 2
    assert quick.grid_for("retrain") == [{}]


def test_quick_method_budgets_merge_into_the_psg_base(tmp_path: Path) -> None:
    obj = minimal() | {"methods": {"scrub": {"epochs": 3, "msteps": 1}}}
    obj["quick"] |= {
        "methods": {"scrub": {"epochs": 1}, "psg_compose": {"psg": {"epochs": 2}}},
        "grid": {"psg_compose": {"forget_weight": [1.0]}},
    }
    quick = load_scenario(write(tmp_path, obj), quick=True)
    base = {"lr": 1e-3, "epochs": 5, "gamma": 0.5}
    scrub = method_config(quick, "scrub", base, {"lr": 2e-3}, seed=1)
    assert scrub == {"epochs": 1, "msteps": 1, "lr": 2e-3, "seed": 1}
    compose = method_config(quick, "psg_compose", base, {"forget_weight": 1.0}, seed=0)
    assert compose["psg"] == {"lr": 1e-3, "epochs": 2, "gamma": 0.5}  # base kept, epochs cut
    assert quick.grid_for("psg_compose") == [{"forget_weight": 1.0}]
    assert method_config(load_scenario(write(tmp_path, obj)), "psg", base, {}, 0)["epochs"] == 5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"recipe": None}, "missing required key 'recipe'"),
        ({"grid": {"forget_everything": {"lr": [1]}}}, "unknown method"),
        ({"budget": 3}, "unknown key"),
        ({"request": {"reason": "tidying_up", "selector": {"labels": ["3"]}}}, "tidying_up"),
    ],
)
def test_bad_scenarios_are_named(tmp_path: Path, change: dict, message: str) -> None:
    obj = minimal()
    for key, value in change.items():
        if value is None:
            obj.pop(key)
        else:
            obj[key] = value
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, obj, "bad.yaml"))


@pytest.mark.slow
def test_quick_command_runs_every_method_and_writes_reports(tmp_path: Path, monkeypatch) -> None:
    """``medunlearn bench --quick`` end to end on the demo: every method, JSON, table, plots."""
    from cli.main import main

    obj = minimal() | {"reference_models": 2}
    obj["grid"] = {m: {} for m in METHODS}  # one point per method keeps the test short
    obj["methods"] = {
        "psg": {"epochs": 2},
        "boundary_shrink": {"epochs": 2},
        "psg_compose": {"psg": {"epochs": 2}, "sweep": [{"lr": 3e-4}, {"lr": 3e-3}]},
        "scrub": {"epochs": 1, "msteps": 1},
    }
    scenario = write(tmp_path, obj)
    out = tmp_path / "out"
    main(["bench", str(scenario), "--quick", "--out", str(out), "--cache", str(tmp_path / "c")])

    result = json.loads((out / "tiny.json").read_text())
    assert set(result["summary"]) == set(METHODS) - {"retrain"}  # references give that row
    assert result["quick"] and result["seeds"] == [0]
    assert result["reference"]["avg_gap"] == 0.0
    assert result["retrain_seconds"] > 0
    assert result["noise_floor"]["n_references"] == 2
    assert result["calibration"]["summary"]["retrain"]["n"] == 3  # main reference + 2
    assert result["calibration"]["summary"]["memorised"]["n"] == 3
    for method, s in result["summary"].items():
        assert s["seconds"]["mean"] > 0, method
        assert 0 <= s["avg_gap"]["mean"] <= 100, method  # percentage points
        assert 0 <= s["lira_auc"]["mean"] <= 1, method
        assert s["peak_mb"]["mean"] > 0
    assert result["time_ratio_basis"] == "cpu"  # fresh references record CPU seconds
    for run in result["runs"]:
        assert run["time_ratio"] == pytest.approx(
            run["cpu_seconds"] / result["retrain_cpu_seconds"], rel=0.01
        )
    assert {t["method"] for t in result["tuning"]} == set(METHODS) - {"retrain"}
    table = (out / "tiny.md").read_text()
    assert "| psg |" in table and "retrain (reference)" in table and "Avg Gap (pp)" in table
    assert "Gate calibration" in table and "noise floor" in table
    # the validation tuning signal ranks the methods as the same signal on test does
    agreement = result["tuning_agreement"]
    assert agreement["n_methods"] == 10 and agreement["spearman"] > 0.6
    assert f"**{best_method(result)}**" in table
    for png in ("tiny_tradeoff.png", "tiny_time_gap.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tuning_picks_the_lowest_validation_gap(tmp_path: Path, monkeypatch) -> None:
    """Two grid points: the row reports the one with the lower Avg Gap on *val*. A second
    run restores every finished run from the run cache; changed settings recompute."""
    from medunlearn.benchmark import calibration, runner
    from medunlearn.benchmark.runner import run_benchmark

    obj = minimal() | {"reference_models": 0}
    obj["grid"] = {"psg": {"lr": [1e-6, 3e-3]}}
    obj["methods"] = {"psg": {"epochs": 2}}

    def bench(o: dict) -> dict:
        return run_benchmark(
            load_scenario(write(tmp_path, o), quick=True),
            psg_base={},
            methods=["psg"],
            cache_dir=tmp_path / "c",
            progress=False,
            log=lambda _: None,
        )

    result = bench(obj)
    gaps = {t["setting"]["lr"]: t["val_tuning_gap"] for t in result["tuning"]}
    chosen = result["summary"]["psg"]["setting"]["lr"]
    assert gaps[chosen] == min(gaps.values())
    assert result["summary"]["psg"]["val_tuning_gap"] == gaps[chosen]
    assert "psg" in markdown_table(result)

    class Ran(Exception):
        """Raised if a method actually trains on the second, cached run."""

    def must_not_run(*args, **kwargs):
        raise Ran

    monkeypatch.setattr(runner, "run_method", must_not_run)
    monkeypatch.setattr(calibration, "memorise", must_not_run)
    again = bench(obj)  # every run and calibration row restored: nothing trains
    assert again["runs"] == result["runs"] and again["tuning"] == result["tuning"]
    assert again["calibration"] == result["calibration"]
    assert result["calibration"]["summary"]["memorised"]["n"] == 1
    with pytest.raises(Ran):  # a different budget is a different run
        bench({**obj, "methods": {"psg": {"epochs": 1}}})


def test_benchmark_reports_carry_hashed_patient_ids_only() -> None:
    from medunlearn.benchmark.runner import redacted_request
    from medunlearn.data.request import ForgetRequest

    request = ForgetRequest("consent_withdrawal", {"patient_ids": ["P0529", "P0109"]})
    out = redacted_request(request)
    assert "P0529" not in json.dumps(out) and "P0109" not in json.dumps(out)
    assert [t[:3] for t in out["selector"]["patient_ids"]] == ["pt-", "pt-"]
    assert out["hash"] == request.hash  # the request stays identifiable by its hash


@pytest.mark.slow
def test_runs_mapped_to_fresh_workers_in_any_order_keep_the_salted_ids(tmp_path: Path) -> None:
    """``map_runs`` may run jobs in another process (a Dask worker starts without the
    project's salt) and in any order: the records come back in job order, with the request
    hashed under the project's salt, never the reversible unsalted hash."""
    from medunlearn.benchmark.runner import run_benchmark
    from medunlearn.data.manifest import set_identifier_salt
    from medunlearn.data.request import ForgetRequest

    selector = {"patient_ids": ["P0529", "P0109"]}
    obj = minimal() | {"reference_models": 0}
    obj["request"] = {"reason": "consent_withdrawal", "selector": selector}
    obj["grid"] = {"finetune": {"lr": [1e-3, 3e-3]}}
    obj["methods"] = {"finetune": {"epochs": 1}}
    scenario = load_scenario(write(tmp_path, obj))
    seen: list[tuple] = []

    def fresh_workers(fn, jobs, done):
        out = []
        for job in reversed(jobs):
            set_identifier_salt(None)  # what a new worker process has
            seen.append(job)
            out.append(fn(job))
            done()  # the contract: once per finished run (moves the progress bar)
        return out[::-1]

    set_identifier_salt(b"project secret")
    salted = ForgetRequest("consent_withdrawal", selector).hash
    result = run_benchmark(
        scenario,
        psg_base={},
        methods=["finetune"],
        cache_dir=tmp_path / "c",
        progress=False,
        log=lambda _: None,
        map_runs=fresh_workers,
    )
    set_identifier_salt(None)
    assert salted != ForgetRequest("consent_withdrawal", selector).hash
    assert len(seen) == 3  # two grid points at seed 0, the tuned point at seed 1
    assert [(r["setting"], r["seed"]) for r in result["runs"]] == [
        (result["summary"]["finetune"]["setting"], 0),
        (result["summary"]["finetune"]["setting"], 1),
    ]
    assert {r["metrics"]["request_hash"] for r in result["runs"]} == {salted}
