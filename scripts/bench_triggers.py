"""Measure the drift trigger on a project with a production model (e.g. after `make demo`).

    python scripts/bench_triggers.py --project . [--device scanner_c]

Starts a Prefect server on 127.0.0.1 (a free port, its own PREFECT_HOME) and
`medunlearn serve`, writes `incoming/batch.csv` (the held-out images of every device but
``--device``), runs `drift-watch/scheduled` and waits for the `maintenance/on-drift` run that
revises the vanished device. Prints, in seconds: the drift watch, event -> on-drift run
created (trigger), created -> running (flow start-up), the flow's own steps (compute,
registry), and event -> revision registered. Stops every process it started, by PID.
Writes into the project (incoming/, a new candidate revision): use a scratch clone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import yaml


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default=".")
    parser.add_argument("--device", default="scanner_c")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    project = Path(args.project).resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    dataset = project / params["maintain"]["dataset"]
    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str)
    rows = manifest[(manifest["split"] != "train") & (manifest["device"] != args.device)]
    incoming = project / params["drift"]["incoming"]
    (incoming / "images").mkdir(parents=True, exist_ok=True)
    for rel in rows["path"]:
        shutil.copy2(dataset / rel, incoming / "images" / Path(rel).name)
    rows[["image_id", "device", "site"]].assign(
        path=[f"images/{Path(r).name}" for r in rows["path"]]
    ).to_csv(incoming / "batch.csv", index=False)

    home = Path(tempfile.mkdtemp(prefix="medunlearn-bench-prefect-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    procs: list[subprocess.Popen] = []

    def start(name: str, *cmd: str) -> subprocess.Popen:
        out = open(home / f"{name}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    def wait(predicate, what: str):
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise SystemExit(f"timed out waiting for {what}; logs in {home}")

    try:
        start(
            "server",
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait(healthy, "the server")
        serve_started = time.time()
        start("serve", sys.executable, "-m", "flows.cli", "serve")
        found = wait(
            lambda: (
                (d := httpx.post(f"{api}/deployments/filter", json={}).json()) and len(d) == 3 and d
            ),
            "the deployments",
        )
        serve_ready = time.time() - serve_started
        flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
        watch = next(d for d in found if flows[d["flow_id"]] == "drift-watch")
        on_drift = next(d["id"] for d in found if d["name"] == "on-drift")
        time.sleep(5)  # the automation reaches the trigger service
        watch_run = httpx.post(f"{api}/deployments/{watch['id']}/create_flow_run", json={}).json()

        def revised():
            body = {"flow_runs": {"deployment_id": {"any_": [on_drift]}}}
            for run in httpx.post(f"{api}/flow_runs/filter", json=body).json():
                drift = run["parameters"].get("drift") or {}
                ours = drift.get("kind") == "vanished" and drift.get("value") == args.device
                if ours and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
                    return run
            return None

        run = wait(revised, "the on-drift revision")
        watch_run = httpx.get(f"{api}/flow_runs/{watch_run['id']}").json()
        events = httpx.post(
            f"{api}/events/filter",
            json={"filter": {"event": {"name": ["medunlearn.data.drift.detected"]}}, "limit": 50},
        ).json()["events"]
        event = next(
            e
            for e in events
            if e["payload"].get("kind") == "vanished" and e["payload"].get("value") == args.device
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    metrics = json.loads((project / params["maintain"]["reports"]["metrics"]).read_text())
    occurred = ts(event["occurred"])
    result = {
        "state": run["state_type"],
        "serve_ready_s": round(serve_ready, 1),
        "drift_watch_s": round(ts(watch_run["end_time"]) - ts(watch_run["start_time"]), 1),
        "trigger_s": round(ts(run["created"]) - occurred, 1),
        "flow_start_s": round(ts(run["start_time"]) - ts(run["created"]), 1),
        "flow_run_s": round(ts(run["end_time"]) - ts(run["start_time"]), 1),
        "event_to_registered_s": round(ts(run["end_time"]) - occurred, 1),
        "step_seconds": metrics.get("step_seconds"),
        "compute_seconds": metrics.get("compute_seconds"),
        "overhead_seconds": metrics.get("overhead_seconds"),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
