"""``dvc repro`` runs the train and maintain stages; a second run is a no-op; push/pull
restore data and models.

Runs the real commands (``medunlearn prepare``, ``dvc repro``, ``dvc push``/``pull``) in a
throwaway copy of the project with small settings, as a user would from a clean clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medunlearn.models.checkpoint import load_checkpoint

# two whole DVC projects, about 5 min each on 2 cores: `make test-slow`
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cwd: Path, *args: str) -> str:
    if args[0] == "dvc":  # the venv's dvc, whatever PATH says
        args = (sys.executable, "-m", "dvc", *args[1:])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


def make_project(tmp: Path) -> Path:
    project = tmp / "project"
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("medunlearn", "tasks", "flows", "cli", "requests"):
        shutil.copytree(REPO / folder, project / folder, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, project / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=1, model_kwargs={"width": 0.125}, augmentation={})
    params["unlearn"].update(epochs=2)
    params["maintain"].update(
        sweep=[
            {"name": "a", "method": "psg", "settings": {"lr": 1e-3}},
            {"name": "b", "method": "psg", "settings": {"lr": 3e-4}},
        ],
        sweep_by_reason={},  # exactly the two entries above
    )
    # this test is about reproducibility, not model quality: gates that a 1-epoch model passes
    params["gates"]["class_retirement"] = {
        "max_forget_acc": 1.0,
        "max_retain_drop": 1.0,
        "max_balanced_drop": 1.0,
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    run(project, "git", "init", "-q")
    run(project, "dvc", "init", "-q")
    run(project, "dvc", "config", "core.analytics", "false")
    run(project, "dvc", "config", "core.check_update", "false")
    run(project, "dvc", "remote", "add", "-d", "local", str(tmp / "remote"))
    return project


def test_repro_is_reproducible_and_restorable(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    run(project, sys.executable, "-m", "cli", "prepare")
    assert (project / "data.dvc").is_file()

    first = run(project, "dvc", "repro")
    assert "Running stage 'train'" in first and "Running stage 'maintain'" in first
    assert (project / "models" / "candidate" / "model.onnx").is_file()
    metrics = run(project, "dvc", "metrics", "show")
    assert "reports/metrics.json" in metrics and "reports/train_metrics.json" in metrics
    assert "reports/train_report.json" not in metrics and "per_class" not in metrics
    _, meta = load_checkpoint(project / "models" / "deployed.pt")
    recorded = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert meta.data_version == recorded  # the model names the exact data it saw
    # the demo is byte-deterministic: a clean clone rebuilds exactly the committed data.dvc
    assert recorded == yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]["md5"]

    second = run(project, "dvc", "repro")
    assert "Running stage" not in second and "didn't change" in second

    status = run(project, "dvc", "status")
    assert "up to date" in status

    run(project, "dvc", "push")
    checkpoint = (project / "models" / "deployed.pt").read_bytes()
    shutil.rmtree(project / "data")
    (project / "models" / "deployed.pt").unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    run(project, "dvc", "pull")
    assert (project / "models" / "deployed.pt").read_bytes() == checkpoint
    assert (project / "data" / "demo" / "manifest.csv").is_file()
    assert "up to date" in run(project, "dvc", "status")

    # a what-if: `dvc exp run -S` changes one parameter and re-runs only the stages that read it
    run(project, "git", "add", "-A")
    run(
        project,
        *("git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "base"),
    )
    what_if = run(project, "dvc", "exp", "run", "-S", "unlearn.gamma=1.0")
    assert "Running stage 'maintain'" in what_if and "Running stage 'train'" not in what_if
    changed = run(project, "dvc", "params", "diff", "--md")
    assert "unlearn.gamma" in changed and "1.0" in changed
    assert "unlearn.gamma" in run(project, "dvc", "exp", "show", "--md")
    assert (project / "models" / "candidate" / "model.onnx").is_file()

    # the stage's deps follow params.yaml: editing the request the params name is a change...
    request = project / "requests" / "retire_digit_3.yaml"
    request.write_text(request.read_text() + "note: edited after the run\n")
    changed = run(project, "dvc", "status", "maintain")
    assert "requests/retire_digit_3.yaml" in changed and "modified" in changed
    run(project, "git", "checkout", "--", "requests/retire_digit_3.yaml")
    assert "up to date" in run(project, "dvc", "status", "maintain")
    # ...and so is pointing maintain.request at another file
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["maintain"]["request"] = "requests/withdraw_consent.yaml"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    moved = run(project, "dvc", "status", "maintain")
    assert "requests/withdraw_consent.yaml" in moved


def test_registered_revisions_promote_and_reproduce(tmp_path: Path) -> None:
    """As `make demo` does, in a throwaway project: the train stage (`dvc repro train`), then
    `medunlearn register` makes it v1.0.0, promotion to production, a revision v1.1.0
    (candidate + staging) with its ledger entry, the maintain stage; then `dvc status` is
    clean, `medunlearn reproduce` re-runs v1.1.0 in a scratch worktree and every metric
    agrees exactly (same machine, same seeds), and `dvc exp run -S unlearn.gamma=1.0`
    re-runs only the revision, never the training (issue 28)."""
    import json

    project = make_project(tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["maintain"]["sweep"] = params["maintain"]["sweep"][:1]  # one run: this is about
    params["maintain"]["compose"] = {"enabled": False}  # the registry, not the method
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    run(project, sys.executable, "-m", "cli", "prepare")
    run(project, "git", "add", "-A")
    git = ("git", "-c", "user.name=ci", "-c", "user.email=ci@localhost")
    run(project, *git, "commit", "-qm", "project and data")
    cli = (sys.executable, "-m", "cli")
    assert "Running stage 'train'" in run(project, "dvc", "repro", "train")
    trained = run(project, *cli, "register")
    assert "registered classifier v1.0.0 (candidate)" in trained
    for stage in ("staging", "production"):
        run(
            project,
            *cli,
            "promote",
            "classifier",
            "v1.0.0",
            "--to",
            stage,
            "--by",
            "ci",
            "--why",
            "first model",
        )
    # the first version has its ONNX file too (metadata naming it), readable by a serving
    # user like a plain file (never tempfile's 0600), and production serves it
    from medunlearn.models.export import read_onnx_metadata

    first = project / "models" / "classifier" / "v1.0.0" / "model.onnx"
    assert read_onnx_metadata(first)["registry_version"] == "v1.0.0"
    served = project / "models" / "production" / "model.onnx"
    assert served.read_bytes() == first.read_bytes()
    plain = project / "plain-file"
    plain.write_text("x")
    for path in (served, served.with_name("model.pt")):
        assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    plain.unlink()
    run(project, *cli, "revise")
    rows = {r["version"]: r for r in json.loads(run(project, *cli, "registry", "--json"))}
    assert rows["v1.0.0"]["stages"] == ["production"]
    assert rows["v1.1.0"]["stages"] == ["candidate", "staging"]
    assert rows["v1.1.0"]["parent"] == "v1.0.0" and rows["v1.1.0"]["pushed"]
    ledger = json.loads(run(project, *cli, "request", "list", "--json"))
    assert [e["status"] for e in ledger] == ["applied in v1.1.0"]
    again = run(project, *cli, "revise")  # `make demo` twice: the request is already applied
    assert "nothing to do" in again and "already applied in v1.1.0" in again
    again = run(project, *cli, "register")  # the same weights: the same version
    assert "registered classifier v1.0.0" in again
    maintained = run(project, "dvc", "repro", "maintain")  # the revision as a DVC stage
    assert "Running stage 'maintain'" in maintained and "Running stage 'train'" not in maintained
    assert "up to date" in run(project, "dvc", "status")
    assert [r["version"] for r in json.loads(run(project, *cli, "registry", "--json"))] == [
        "v1.0.0",
        "v1.1.0",
    ]
    # the records, cards, .dvc files and ledger are committed with the revision
    committed = ("registry", "ledger", "models/classifier")
    assert run(project, "git", "status", "--porcelain", "--", *committed) == ""

    out = run(project, *cli, "reproduce", "classifier", "v1.1.0")
    assert "classifier v1.1.0 (maintain at" in out and "reproduced within 0.0" in out
    assert "DIFFER" not in out
    assert run(project, "git", "worktree", "list").count("\n") == 1  # the scratch one is gone

    # a what-if after the demo: only the revision runs again (the train stage is up to date)
    what_if = run(project, "dvc", "exp", "run", "-S", "unlearn.gamma=1.0")
    assert "Running stage 'maintain'" in what_if and "Running stage 'train'" not in what_if
