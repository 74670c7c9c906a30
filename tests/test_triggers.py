"""Triggers and scale (flows/deployments.py, flows/drift.py, maintenance modes, Dask):
scheduled maintenance with nothing pending touches nothing; the Dask runner gives the thread
runner's results; a drift event on a running Prefect server starts a revision end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from projects import SWEEP, export_first, git_dvc_project, make_project

REPO = Path(__file__).resolve().parents[1]
LENIENT = {"max_retain_drop": 1.0, "max_balanced_drop": 1.0, "max_class_recall_drop": 1.0}


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (git and DVC internals included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def registry_project(tmp: Path, demo_dir: Path, demo_model, request: dict, **maintain) -> Path:
    """A git + DVC project whose production v1.0.0 is the demo model, registry and ledger on."""
    from medunlearn.revision.registry import Registry

    params = make_project(
        tmp,
        demo_dir,
        demo_model,
        request,
        gates={r: LENIENT for r in ("device_deprecation", "consent_withdrawal")},
        sweep=SWEEP[:1],
        compose={"enabled": False},
        **maintain,
    )
    config = yaml.safe_load(params.read_text())
    config["registry"] = {"enabled": True, "model": "classifier"}
    config["ledger"] = {"enabled": True, "path": "ledger/requests.jsonl"}
    config["promotion"] = {"auto_staging": True, "serving_dir": "models/production"}
    config["schedule"] = {"maintenance_cron": "0 2 * * 0", "drift_cron": "0 3 * * *"}
    config["drift"] = {
        "incoming": str(tmp / "incoming"),
        "max_images": 400,
        "permutations": 200,
        "report": str(tmp / "reports" / "drift.json"),
        "on_device_drift": "deprecate_device",
        "on_embedding_drift": "notify_only",
    }
    params.write_text(yaml.safe_dump(config))
    git_dvc_project(tmp)
    first = tmp / "models" / ".first"
    first.mkdir()
    shutil.copy2(tmp / "models" / "deployed.pt", first / "model.pt")
    export_first(first)
    reg = Registry(tmp)
    reg.register("classifier", first, {"gates": {"passed": True}, "kind": "trained"}, "v1.0.0")
    reg.promote("classifier", "v1.0.0", "staging", "tester", "first")
    reg.promote("classifier", "v1.0.0", "production", "tester", "first")
    return params


def test_scheduled_maintenance_with_nothing_pending_changes_nothing(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    from flows.maintenance import maintenance_flow

    request = {"reason": "consent_withdrawal", "selector": {"patient_ids": ["P0109"]}}
    params = registry_project(tmp_path, demo_dir, demo_model, request)
    before = tree_hashes(tmp_path)
    result = maintenance_flow(str(params), pending=True)
    assert result["status"] == "nothing to do" and result["revisions"] == []
    assert tree_hashes(tmp_path) == before


def test_a_crashed_request_ends_failed_committed_and_is_not_retried(
    tmp_path, prefect_harness, demo_dir, demo_model, monkeypatch
) -> None:
    """A `revise --request` whose run crashes (here: in the unlearning step) leaves its
    ledger entry ``failed: unlearn (RuntimeError)``, committed, never ``pending``; the next
    scheduled run has nothing to do and changes no file (issue 27)."""
    import flows.maintenance as maintenance
    from medunlearn.revision.ledger import Ledger

    request = {"reason": "consent_withdrawal", "selector": {"patient_ids": ["P0109"]}}
    params = registry_project(tmp_path, demo_dir, demo_model, request)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(maintenance, "revision_sweep", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        maintenance.maintenance_flow(str(params), request)
    monkeypatch.undo()
    (entry,) = Ledger(tmp_path / "ledger" / "requests.jsonl").entries()
    assert entry["status"] == "failed: unlearn (RuntimeError)"

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout

    assert git("status", "--porcelain", "--", "ledger/requests.jsonl") == ""
    assert "failed" in git("log", "-1", "--format=%s", "--", "ledger/requests.jsonl")
    before = tree_hashes(tmp_path)
    result = maintenance.maintenance_flow(str(params), pending=True)
    assert result["status"] == "nothing to do"
    assert tree_hashes(tmp_path) == before


def test_a_busy_registry_leaves_the_request_pending(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    """Another process holds the registry lock through the whole run: the revision is
    refused naming the lock (``RegistryBusy``, a refusal: one line and exit 2 at the CLI,
    checked by hand in the issue-27 review), nothing is registered, and the request stays
    pending, so the next run tries it again (issue 27)."""
    import flows.maintenance as maintenance
    from medunlearn.revision.ledger import Ledger
    from medunlearn.revision.registry import Registry, RegistryBusy

    request = {"reason": "consent_withdrawal", "selector": {"patient_ids": ["P0109"]}}
    params = registry_project(tmp_path, demo_dir, demo_model, request)
    config = yaml.safe_load(params.read_text())
    config["registry"]["lock_timeout"] = 1
    params.write_text(yaml.safe_dump(config))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock\n"
            "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(600)",
            str(tmp_path / ".medunlearn-registry.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RegistryBusy, match="registry busy: another run holds"):
            maintenance.maintenance_flow(str(params), request)
    finally:
        holder.kill()
        holder.wait()
    (entry,) = Ledger(tmp_path / "ledger" / "requests.jsonl").entries()
    assert entry["status"] == "pending"
    assert Registry(tmp_path).versions("classifier") == ["v1.0.0"]


def test_a_bad_pending_request_is_rejected_and_a_notice_touches_nothing(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    """A request its data cannot serve (a device with no images) ends rejected (committed)
    instead of blocking the good request after it and every later scheduled run, which
    revises the good one (candidate + staging, never production) and, with nothing left
    pending, changes no file; a notify-only drift finding and a scheduled drift watch with
    no batch delivered change no file either."""
    from flows.maintenance import maintenance_flow
    from medunlearn.data.request import ForgetRequest
    from medunlearn.revision.candidates import GatesFailed
    from medunlearn.revision.ledger import Ledger

    request = {"reason": "consent_withdrawal", "selector": {"patient_ids": ["P0109"]}}
    params = registry_project(tmp_path, demo_dir, demo_model, request)
    before = tree_hashes(tmp_path)
    finding = {"attribute": "embedding", "kind": "embedding", "value": None, "p_value": 1e-4}
    result = maintenance_flow(str(params), drift=finding)
    assert result["status"] == "notified" and "notify only" in result["why"]
    from flows.drift import drift_watch_flow

    assert drift_watch_flow(str(params))["status"] == "no batch"  # nothing delivered yet
    assert tree_hashes(tmp_path) == before
    ledger = Ledger(tmp_path / "ledger" / "requests.jsonl")
    ledger.add(ForgetRequest("device_deprecation", {"devices": ["scanner_z"]}))
    ledger.add(ForgetRequest("consent_withdrawal", {"patient_ids": ["P0109"]}))
    with pytest.raises(GatesFailed, match="1 of 2 pending request"):  # after the good one
        maintenance_flow(str(params), pending=True)
    bad, good = ledger.entries()
    assert bad["status"].startswith("rejected: RequestError")
    assert good["status"] == "applied in v1.1.0"  # the bad one did not block it
    from medunlearn.revision.registry import Registry

    assert Registry(tmp_path).stages("classifier")["staging"] == "v1.1.0"  # never production
    assert Registry(tmp_path).current("classifier", "production") == "v1.0.0"

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout

    assert git("status", "--porcelain", "--", "ledger") == ""  # rejection and revision committed
    assert "rejected" in git("log", "--format=%s", "--", "ledger/requests.jsonl")
    before = tree_hashes(tmp_path)  # a ledger of applied and rejected requests only
    assert maintenance_flow(str(params), pending=True)["status"] == "nothing to do"
    assert tree_hashes(tmp_path) == before


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


# --- end to end on a running Prefect server ----------------------------------------------


def test_deployments_take_their_crons_and_trigger_from_params(tmp_path) -> None:
    """The served definitions, from a params file with its own crons and model name; the
    on-drift trigger's resource filter matches a vanished device of this model only."""
    from prefect.events.schemas.events import Resource

    from flows.deployments import build_deployments
    from medunlearn.config import ConfigError

    params = tmp_path / "params.yaml"
    config = {
        "schedule": {
            "maintenance_cron": "15 4 * * 1",
            "drift_cron": "*/30 * * * *",
            "timezone": "Europe/Zurich",
        },
        "registry": {"model": "cxr"},
        "maintain": {"task_runner": "threads", "max_workers": 1},
    }
    params.write_text(yaml.safe_dump(config))
    scheduled, watch, on_drift = build_deployments(str(params))
    assert [(d.flow_name, d.name) for d in (scheduled, watch, on_drift)] == [
        ("maintenance", "scheduled"),
        ("drift-watch", "scheduled"),
        ("maintenance", "on-drift"),
    ]
    assert [(x.schedule.cron, x.schedule.timezone) for x in scheduled.schedules] == [
        ("15 4 * * 1", "Europe/Zurich")
    ]
    assert [x.schedule.cron for x in watch.schedules] == ["*/30 * * * *"]
    assert scheduled.parameters == {"params_path": str(params), "pending": True}
    assert not on_drift.schedules
    (trigger,) = on_drift.triggers
    assert trigger.expect == {"medunlearn.data.drift.detected"}
    assert trigger.parameters == {"params_path": str(params), "drift": "{{ event.payload }}"}

    def finding(model: str, attribute: str, kind: str) -> Resource:
        return Resource.model_validate(
            {
                "prefect.resource.id": f"medunlearn.model.{model}",
                "medunlearn.attribute": attribute,
                "medunlearn.kind": kind,
            }
        )

    assert trigger.match.includes([finding("cxr", "device", "vanished")])
    assert not trigger.match.includes([finding("cxr", "device", "frequency")])
    assert not trigger.match.includes([finding("cxr", "device", "new")])
    assert not trigger.match.includes([finding("cxr", "site", "vanished")])
    assert not trigger.match.includes([finding("classifier", "device", "vanished")])
    del config["schedule"]["drift_cron"]
    params.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="schedule.drift_cron"):
        build_deployments(str(params))


def test_the_at_capacity_notice_is_logged_once_a_minute() -> None:
    import logging

    from flows.deployments import AtCapacityThrottle

    now = [0.0]
    throttle = AtCapacityThrottle(60, clock=lambda: now[0])

    def record(msg: str, *args) -> logging.LogRecord:
        return logging.LogRecord("prefect.runner", logging.INFO, __file__, 1, msg, args, None)

    passed = []
    for t in (0, 2, 4, 30, 59.9, 60.5, 62):  # a poll every few seconds
        now[0] = t
        passed.append(throttle.filter(record("%d scheduled runs skipped (at capacity)", 2)))
    assert passed == [True, False, False, False, False, True, False]
    now[0] = 63  # another count is another message; other records always pass
    assert throttle.filter(record("%d scheduled runs skipped (at capacity)", 1))
    assert all(throttle.filter(record("Runner started")) for _ in range(3))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args[:4]} exited {p.returncode}")
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started, and its children, by PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def demo_batch_without(tmp: Path, demo_dir: Path, device: str) -> Path:
    """incoming/batch.csv: the demo's held-out images of every device but ``device``
    (unlabelled, as a clinical batch arrives)."""
    manifest = pd.read_csv(demo_dir / "manifest.csv", dtype=str)
    rows = manifest[(manifest["split"] != "train") & (manifest["device"] != device)]
    folder = tmp / "incoming"
    (folder / "images").mkdir(parents=True)
    for rel in rows["path"]:
        shutil.copy2(demo_dir / rel, folder / "images" / Path(rel).name)
    batch = rows[["image_id", "device", "site"]].assign(
        path=[f"images/{Path(r).name}" for r in rows["path"]]
    )
    batch.to_csv(folder / "batch.csv", index=False)
    return folder / "batch.csv"


@pytest.mark.slow
def test_drift_event_starts_a_candidate_revision(tmp_path, demo_dir, demo_model) -> None:
    """Server on 127.0.0.1, `medunlearn serve`, drift-watch run on a batch without
    scanner_c: the event starts maintenance/on-drift, which revises a device_deprecation
    request for scanner_c and registers v1.1.0 as candidate + staging, not production."""
    request = {"reason": "consent_withdrawal", "selector": {"patient_ids": ["P0109"]}}
    project = tmp_path / "project"
    project.mkdir()
    params = registry_project(project, demo_dir, demo_model, request)
    demo_batch_without(project, demo_dir, "scanner_c")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("PREFECT_API_KEY", None)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str, cwd: Path) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    prefect = [sys.executable, "-m", "prefect"]
    try:
        server = start(
            "server",
            *prefect,
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=tmp_path,
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the Prefect server", [server])
        serve = start(
            "serve",
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--params",
            str(params),
            cwd=project,
        )

        def deployments() -> dict[str, str]:
            found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
            return {d["name"]: d["id"] for d in found} if len(found) == 3 else {}

        wait_for(deployments, 180, "the three deployments", [server, serve])
        flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
        found = httpx.post(f"{api}/deployments/filter", json={}).json()
        names = {f"{flows[d['flow_id']]}/{d['name']}" for d in found}
        assert names == {"maintenance/scheduled", "drift-watch/scheduled", "maintenance/on-drift"}
        watch = next(d for d in found if flows[d["flow_id"]] == "drift-watch")
        time.sleep(5)  # the trigger's automation reaches the server's trigger service
        httpx.post(f"{api}/deployments/{watch['id']}/create_flow_run", json={}).raise_for_status()
        on_drift = next(d["id"] for d in found if d["name"] == "on-drift")

        def runs() -> list[dict]:
            body = {"flow_runs": {"deployment_id": {"any_": [on_drift]}}}
            return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()

        def revised() -> dict | None:
            for run in runs():
                drift = run["parameters"].get("drift") or {}
                ours = drift.get("kind") == "vanished" and drift.get("value") == "scanner_c"
                if ours and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    return run
            return None

        run = wait_for(revised, 480, "the on-drift revision of scanner_c", [server, serve])
        assert run["state_type"] == "COMPLETED", (logs / "serve.log").read_text()[-4000:]
        drift = run["parameters"]["drift"]
        assert drift["attribute"] == "device" and drift["p_value"] < 0.01
        assert drift["n_batch"] > 0 and drift["model"] == "classifier"
        report = json.loads((project / "reports" / "drift.json").read_text())
        assert report["drifted"] and report["version"] == "v1.0.0"
        kinds = {(t["attribute"], t["kind"]) for t in report["tests"] if t["drifted"]}
        assert ("device", "frequency") in kinds  # a device finding the trigger leaves alone:
        assert len(runs()) == 1  # one on-drift run, for the vanished device only
        body = {"artifacts": {"key": {"any_": ["drift-tests", "drift-summary"]}}}
        keys = {a["key"] for a in httpx.post(f"{api}/artifacts/filter", json=body).json()}
        assert keys == {"drift-tests", "drift-summary"}
        # an external monitor raises the same event with the README's command: the trigger
        # starts a run, which finds the request already applied and changes nothing
        readme = (REPO / "README.md").read_text()
        command = readme[readme.index(".venv/bin/prefect event emit") :]
        command = command[: command.index("```")].replace(
            ".venv/bin/prefect", f"{sys.executable} -m prefect"
        )
        before = tree_hashes(project / "ledger")
        emitted = subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True
        )
        assert emitted.returncode == 0, emitted.stderr

        def second() -> dict | None:
            done = [r for r in runs() if r["id"] != run["id"]]
            return done[0] if done and done[0]["state_type"] in ("COMPLETED", "FAILED") else None

        again = wait_for(second, 240, "the on-drift run of the emitted event", [server, serve])
        assert again["state_type"] == "COMPLETED"
        assert again["parameters"]["drift"]["value"] == "scanner_c"
        assert tree_hashes(project / "ledger") == before
    finally:
        for proc in reversed(procs):
            stop(proc)
    from medunlearn.revision.ledger import Ledger
    from medunlearn.revision.registry import Registry

    reg = Registry(project)
    assert reg.stages("classifier") == {
        "candidate": "v1.1.0",
        "staging": "v1.1.0",
        "production": "v1.0.0",
    }
    record = reg.record("classifier", "v1.1.0")
    assert record["requests"][-1]["reason"] == "device_deprecation"
    entries = Ledger(project / "ledger" / "requests.jsonl").entries()
    assert [(e["reason"], e["selector"], e["status"]) for e in entries] == [
        ("device_deprecation", {"devices": ["scanner_c"]}, "applied in v1.1.0")
    ]


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
