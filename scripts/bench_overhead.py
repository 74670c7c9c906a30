"""Measure the orchestration overhead of one maintenance run with a running Prefect server.

    python scripts/bench_overhead.py --project <demo clone after make demo's train+promote> \
        [--request requests/retire_digit_3.yaml] [--repeats 3] [--warm]

Starts `prefect server start` on 127.0.0.1 (a free port, its own PREFECT_HOME), then, per
repeat, copies the project to a scratch folder (with --warm: plus the first repeat's
validation cache and ONNX graph templates, as in a project that ran a revision before: the
data was validated, the architecture exported) and runs `medunlearn revise --request R
--json` there (its ``maintain.work_dir`` emptied first, so every sweep run is computed)
against the server, timed from outside. Prints the process's wall seconds, the flow's own
step laps and compute seconds (``timings`` in the result), and the overhead: wall minus
compute (imports, flow start-up, validation, export, report, registry). Also times `import
flows.maintenance` in a fresh interpreter. Stops the server by its PID. The project itself
is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

WARM_CACHES = ("validation", "onnx-graphs")  # under maintain.work_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", required=True)
    parser.add_argument("--request", default="requests/retire_digit_3.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warm",
        action="store_true",
        help="repeats after the first start with its validation cache and ONNX graph "
        "templates (a project that ran a revision before)",
    )
    args = parser.parse_args()
    project = Path(args.project).resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    work_dir = Path(params["maintain"].get("work_dir", ".cache/maintain"))
    scratch = Path(tempfile.mkdtemp(prefix="medunlearn-overhead-"))
    home = scratch / "prefect-home"
    home.mkdir()
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "ORT_DISABLE_TELEMETRY": "1",
    }
    port = api.split(":")[2].split("/")[0]
    with open(scratch / "server.log", "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                port,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rows = []
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server did not start; log in {scratch / 'server.log'}")
            time.sleep(0.5)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import flows.maintenance"], cwd=project, env=env, check=True
        )
        import_seconds = time.perf_counter() - started
        for i in range(args.repeats):
            copy = scratch / f"project{i}"
            shutil.copytree(project, copy, symlinks=True)
            shutil.rmtree(copy / work_dir, ignore_errors=True)  # no sweep run cached
            for name in WARM_CACHES if args.warm else ():
                if (scratch / name).is_dir():
                    shutil.copytree(scratch / name, copy / work_dir / name)
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "flows.cli",
                    "revise",
                    "--request",
                    args.request,
                    "--json",
                ],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"revise failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
            result = json.loads(done.stdout[done.stdout.index("{") :])
            timings = result["timings"]
            compute = sum(timings["compute_seconds"].values())
            rows.append(
                {
                    "wall": round(wall, 2),
                    "flow": timings["flow_seconds"],
                    "compute": round(compute, 2),
                    "overhead": round(wall - compute, 2),
                    "outside_flow": round(wall - timings["flow_seconds"], 2),
                    "steps": timings["step_seconds"],
                    "version": result["version"],
                }
            )
            rows[-1]["warm"] = args.warm and i > 0
            print(json.dumps(rows[-1]), flush=True)
            for name in WARM_CACHES if i == 0 else ():
                if (copy / work_dir / name).is_dir():
                    shutil.copytree(copy / work_dir / name, scratch / name)
            shutil.rmtree(copy, ignore_errors=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(
        json.dumps(
            {
                "import_flows_maintenance_s": round(import_seconds, 2),
                "overhead_median_s": statistics.median(r["overhead"] for r in rows),
                "wall_median_s": statistics.median(r["wall"] for r in rows),
                "compute_median_s": statistics.median(r["compute"] for r in rows),
            }
        )
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
