"""Cost of successive forget requests as the ledger grows (BENCHMARKS.md, issue 26).

    python scripts/bench_carried.py [--before 9346d15] [--out reports/bench_carried.json]

One deployed model is trained once on the demo (``flows.prepare`` + ``flows.train``, the
shipped ``train`` section). Then, for each variant of the code (``before``: the commit given,
checked out in a temporary ``git worktree``; ``after``: this checkout), a throwaway git + DVC
project registers that model as ``classifier`` v1.0.0 in production, and four requests go
through ``medunlearn revise`` one after another, each revision promoted to production before
the next (the steady state: every request applied in a served version):

1. device deprecation of ``scanner_c``;
2.-4. consent withdrawals of three training patients each (none of them on ``scanner_c``).

Per revision: the forget-train size, the sweep runs, the unlearning seconds (the sweep's
span, ``compute_seconds.unlearn``), composition and evaluation seconds, the flow's own
seconds, and the whole command's wall seconds (interpreter, Prefect's ephemeral server,
registration). Before issue 26 a revision forgot every applied request again; after it, it
forgets only the new request's rows. Settings are the shipped ``params.yaml`` except the
retention bounds (``max_retain_drop``, ``max_balanced_drop``: 1.0 for every reason), so
every revision of both variants registers and the two chains apply the same requests; the
measurement is of cost, not of the gates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medunlearn.revision.registry import Registry  # noqa: E402

ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "ORT_DISABLE_TELEMETRY": "1",
}


def run(cwd: Path, code: Path, *args: str) -> float:
    """Run ``python ARGS`` in ``cwd`` on the code of ``code`` (its own Prefect home, beside
    ``cwd``); its wall seconds."""
    env = {
        **os.environ,
        **ENV,
        "PYTHONPATH": str(code),
        "PREFECT_HOME": tempfile.mkdtemp(prefix="prefect-", dir=cwd.parent),
    }
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def sh(cwd: Path, *args: str) -> None:
    if args[0] == "dvc":
        args = (sys.executable, "-m", "dvc", *args[1:])
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env={**os.environ, **ENV})


def base_params(registry: bool) -> dict[str, Any]:
    """The shipped params with the bench's changes (see the module docstring)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["track_with_dvc"] = False
    params["registry"]["enabled"] = registry
    params["ledger"]["enabled"] = registry
    params["promotion"]["auto_staging"] = True
    for reason in ("class_retirement", "device_deprecation", "consent_withdrawal"):
        params["gates"][reason].update(max_retain_drop=1.0, max_balanced_drop=1.0)
    return params


def train_once(base: Path) -> dict[str, Any]:
    """Materialise the demo and train the deployed model once (this checkout's code)."""
    base.mkdir(parents=True)
    (base / "params.yaml").write_text(yaml.safe_dump(base_params(False), sort_keys=False))
    run(base, ROOT, "-m", "flows.prepare", "--params", "params.yaml")
    run(base, ROOT, "-m", "flows.train", "--params", "params.yaml")
    return json.loads((base / "reports" / "train_metrics.json").read_text())


def requests(base: Path) -> list[dict[str, Any]]:
    """The four requests: a device, then three consents of three training patients each."""
    import pandas as pd

    manifest = pd.read_csv(base / "data" / "demo" / "manifest.csv", dtype=str)
    train = manifest[manifest["split"] == "train"]
    off_device = set(train["patient_id"]) - set(
        train.loc[train["device"] == "scanner_c", "patient_id"]
    )
    patients = sorted(off_device)[:9]
    out = [{"reason": "device_deprecation", "selector": {"devices": ["scanner_c"]}}]
    for i in range(3):
        chosen = patients[3 * i : 3 * i + 3]
        out.append({"reason": "consent_withdrawal", "selector": {"patient_ids": chosen}})
    return out


def variant(name: str, code: Path, base: Path, asks: list[dict[str, Any]], tmp: Path) -> list:
    """Register the trained model, then revise and promote each request in turn."""
    project = tmp / name
    project.mkdir()
    shutil.copytree(base / "data", project / "data")
    (project / "models").mkdir()
    shutil.copy2(base / "models" / "deployed.pt", project / "models" / "deployed.pt")
    (project / "params.yaml").write_text(yaml.safe_dump(base_params(True), sort_keys=False))
    sh(project, "git", "init", "-q")
    sh(project, "git", "config", "user.name", "bench")
    sh(project, "git", "config", "user.email", "bench@localhost")
    sh(project, "dvc", "init", "-q")
    sh(project, "dvc", "remote", "add", "-d", "local", str(tmp / f"{name}-remote"))
    (project / ".gitignore").write_text(
        "/.medunlearn-registry.lock\n/models/production/\n/.cache/\n/reports/\n/data/\n"
        "/models/deployed.pt\n/first/\n"
    )
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "project")
    reg = Registry(project)
    first = project / "first"
    first.mkdir()
    shutil.copy2(project / "models" / "deployed.pt", first / "model.pt")
    reg.register("classifier", first, {"kind": "trained", "gates": {"passed": True}}, "v1.0.0")
    reg.promote("classifier", "v1.0.0", "staging", "bench", "trained")
    reg.promote("classifier", "v1.0.0", "production", "bench", "trained")
    rows = []
    for n, ask in enumerate(asks, start=1):
        path = project / f"request{n}.yaml"
        path.write_text(yaml.safe_dump(ask))
        wall = run(project, code, "-m", "flows.cli", "revise", "--request", path.name)
        metrics = json.loads((project / "reports" / "metrics.json").read_text())
        version = reg.stages("classifier")["candidate"]
        reg.promote(
            "classifier", version, "production", "bench", "next request", accept="benchmark"
        )
        runs = (project / "reports" / "tradeoff.csv").read_text().splitlines()[1:]
        rows.append(
            {
                "variant": name,
                "request": n,
                "reason": ask["reason"],
                "version": version,
                "forget_train": metrics["counts"]["forget_train"],
                "kept_out_train": metrics["counts"].get("inherited_train", 0),
                "sweep_runs": sum(1 for r in runs if r.split(",")[1] == "sweep"),
                "failed_runs": [f["name"] for f in metrics.get("failed_runs") or []],
                "cached_runs": metrics.get("cached_runs", 0),
                "unlearn_seconds": metrics["compute_seconds"]["unlearn"],
                "compose_seconds": metrics["compute_seconds"]["compose"],
                "evaluate_seconds": metrics["compute_seconds"]["evaluate"],
                "flow_seconds": metrics["flow_seconds"],
                "wall_seconds": round(wall, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]], train_seconds: float) -> str:
    head = (
        "| code | request | reason | forget-train | kept out | sweep runs | unlearn s | "
        "flow s | wall s | wall / training |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['request']} | {r['reason']} | {r['forget_train']} | "
            f"{r['kept_out_train']} | {r['sweep_runs']}"
            + (f" (+{len(r['failed_runs'])} diverged)" if r.get("failed_runs") else "")
            + f" | {r['unlearn_seconds']:.1f} | "
            f"{r['flow_seconds']:.1f} | {r['wall_seconds']:.1f} | "
            f"{r['wall_seconds'] / train_seconds:.2f} |"
        )
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        unlearn, flow, wall = (
            sum(r[k] for r in mine) for k in ("unlearn_seconds", "flow_seconds", "wall_seconds")
        )
        lines.append(
            f"| {name} | all {len(mine)} | total | {sum(r['forget_train'] for r in mine)} | | "
            f"{sum(r['sweep_runs'] for r in mine)} | {unlearn:.1f} | {flow:.1f} | {wall:.1f} | "
            f"{wall / train_seconds:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="9346d15", help="commit of the 'before' code")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench_carried.json"))
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-carried-"))
    before = tmp / "before-code"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(before), args.before],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        trained = train_once(tmp / "base")
        asks = requests(tmp / "base")
        rows = variant("before", before, tmp / "base", asks, tmp)
        rows += variant("after", ROOT, tmp / "base", asks, tmp)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "before": args.before,
        "after": commit,
        "train_seconds": trained["seconds"],
        "rows": rows,
        "command": "python scripts/bench_carried.py",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"deployed model trained in {trained['seconds']:.1f} s")
    print(table(rows, trained["seconds"]))


if __name__ == "__main__":
    main()
