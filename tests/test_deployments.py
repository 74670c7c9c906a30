"""Deployments and triggers (flows/deployments.py, flows/drift.py): crons and the drift
trigger come from params; the at-capacity notice is throttled; a drift event on a running
Prefect server starts a candidate revision end to end."""

from __future__ import annotations

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
from projects import registry_project, tree_hashes

REPO = Path(__file__).resolve().parents[1]


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
