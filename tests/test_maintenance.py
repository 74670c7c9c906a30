"""The maintenance flow end to end under a Prefect test harness: demo and HAM10000 device subset.

Each test builds a small project in a temporary folder (dataset, deployed checkpoint,
params.yaml) and runs ``maintenance_flow`` with a small sweep.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from projects import SWEEP, export_first, git_dvc_project, make_project

from medunlearn.data.expectations import ValidationFailed
from medunlearn.models.checkpoint import load_checkpoint
from medunlearn.models.export import check_parity, read_onnx_metadata
from medunlearn.revision.candidates import GatesFailed
from medunlearn.revision.registry import RegistryError
from medunlearn.revision.report import HEADLINE_LEAVES, leaves

LENIENT = {"max_forget_acc": 1.0, "max_retain_drop": 1.0, "max_balanced_drop": 1.0}
# the demo revision's bounds: forget digit 3, keep retention within 10 points
RETIRE_DIGIT_GATES = {"max_forget_acc": 0.05, "max_retain_drop": 0.1, "max_balanced_drop": 0.1}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_revision(tmp_path_factory, prefect_harness, demo_dir, demo_model):
    from flows.maintenance import maintenance_flow

    tmp = tmp_path_factory.mktemp("revision")
    params = make_project(
        tmp,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        gates={"class_retirement": RETIRE_DIGIT_GATES},
    )
    before = sha(tmp / "models" / "deployed.pt")
    result = maintenance_flow(str(params))
    return tmp, params, result, before


def test_demo_revision_passes_gates_and_exports(demo_revision, demo_splits) -> None:
    tmp, _, result, before = demo_revision
    assert sha(tmp / "models" / "deployed.pt") == before, "the deployed model is only read"
    names = {c["name"] for c in result["candidates"]}
    assert {"psg-a", "psg-b"} <= names
    selected = next(c for c in result["candidates"] if c["name"] == result["selected"])
    assert selected["gates"]["passed"]
    assert selected["metrics"]["forget_test_acc"] <= 0.05
    model, meta = load_checkpoint(tmp / "models" / "candidate" / "model.pt")
    assert meta.extra["revision_id"] == result["revision_id"]

    onnx_file = tmp / "models" / "candidate" / "model.onnx"
    props = read_onnx_metadata(onnx_file)
    assert props["revision_id"] == result["revision_id"]
    assert props["request_hash"] == selected["metrics"]["request_hash"]
    recorded = json.loads(props["metrics"])
    # what the pipeline hands the serving team: the retired class and the version
    assert json.loads(props["retired_classes"]) == ["3"]
    assert props["registry_version"] == "unregistered"  # the registry is off here
    assert recorded["forget_train_acc"] == selected["metrics"]["forget_train_acc"]
    assert recorded["mia_auc"] == selected["metrics"]["membership"]["auc"]
    parity = check_parity(model, onnx_file, demo_splits.val)  # onnxruntime vs PyTorch
    assert parity.passed and parity.max_abs_diff <= 1e-4 and parity.n_images == len(demo_splits.val)


def test_demo_revision_reports(demo_revision) -> None:
    tmp, _, result, _ = demo_revision
    headline = json.loads((tmp / "reports" / "metrics.json").read_text())
    assert headline["passed"] and headline["selected"] == result["selected"]
    metrics = json.loads((tmp / "reports" / "metrics_details.json").read_text())
    steps = ("load", "validate", "unlearn", "compose", "evaluate", "export")
    assert set(steps) <= set(metrics["step_seconds"]) and metrics["step_seconds"]["unlearn"] > 0
    compute = metrics["compute_seconds"]
    assert 0 < compute["unlearn"] <= metrics["step_seconds"]["unlearn"]
    assert 0 < compute["evaluate"] <= metrics["step_seconds"]["evaluate"]
    assert metrics["overhead_seconds"] == pytest.approx(
        metrics["flow_seconds"] - sum(compute.values()), abs=0.01
    )
    with open(tmp / "reports" / "tradeoff.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["candidate"] for r in rows} == {c["name"] for c in result["candidates"]}
    assert sum(r["selected"] == "True" for r in rows) == 1
    summary = (tmp / "reports" / "maintenance.md").read_text()
    assert "forget-train" in summary and "candidate/model.onnx" in summary
    assert "[required] forget_train_acc" in summary and "[informative] membership" in summary
    assert metrics["deployed_gates"]["passed"] is False  # the deployed model still predicts 3
    assert (tmp / "reports" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    validation = json.loads((tmp / "reports" / "validation.json").read_text())
    assert validation["success"]
    # dvc metrics: the headline only; the rest in the details file
    assert set(leaves(headline)) == set(HEADLINE_LEAVES)
    assert (
        headline["candidate"]["forget_train_acc"] == metrics["selected_metrics"]["forget_train_acc"]
    )
    # the HTML report next to the card, with the run's validation and plot, and its link
    page = (tmp / "models" / "candidate" / "report.html").read_text()
    request = headline["request"]
    assert f"Revision report: classifier unregistered · request class_retirement {request}" in page
    assert page.count("<tr") > len(validation["outcomes"])  # validation rows are in the table
    assert "expect_column_distinct_values_to_contain_set" in page
    assert 'src="data:image/png;base64,' in page
    link = (tmp / "models" / "candidate" / "report.html").resolve().as_uri()
    assert link in _artifact_markdown("revision-report-classifier")


def test_impossible_gates_fail_the_flow_and_export_nothing(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    from flows.maintenance import maintenance_flow

    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        gates={"class_retirement": {"max_forget_acc": -1.0, "max_retain_drop": 0.0}},
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    stale = tmp_path / "models" / "candidate"  # an earlier request's revision
    stale.mkdir(parents=True)
    (stale / "model.pt").write_bytes(b"earlier revision")
    with pytest.raises(GatesFailed, match="no candidate of 1 passed"):
        maintenance_flow(str(params))
    assert not stale.exists(), "a refused run leaves no candidate that the report denies"
    assert not (tmp_path / "models" / "candidate" / "model.pt").exists()
    assert not (tmp_path / "models" / "candidate" / "model.onnx").exists()
    assert not list((tmp_path / "models").glob(".revision-*"))
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["passed"] is False and metrics["revision_id"] is None
    assert "No candidate passed" in (tmp_path / "reports" / "maintenance.md").read_text()


def revise_cli(params: Path, request: Path):
    """``medunlearn revise --params P --request R`` as a user runs it (a subprocess)."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "cli", "revise", "--params", str(params)]
    command += ["--request", str(request)]
    return subprocess.run(
        command,
        cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_revise_cli_exits_nonzero_when_gates_fail(tmp_path, demo_dir, demo_model):
    """As a user sees it: exit status 1, the refusal and the report, and no traceback."""

    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        gates={"class_retirement": {"max_forget_acc": -1.0}},
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    proc = revise_cli(params, tmp_path / "request.yaml")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "revise refused: " in proc.stderr and "No candidate passed" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_revise_cli_refuses_a_model_of_other_classes_in_one_line(tmp_path, demo_dir, demo_model):
    """A deployed checkpoint whose classes are not the dataset's (issue 27: a traceback):
    exit 1, one line naming the checkpoint and both class lists, no traceback."""

    import torch

    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    deployed = tmp_path / "models" / "deployed.pt"
    payload = torch.load(deployed, weights_only=True)
    names = payload["metadata"]["class_names"]
    payload["metadata"]["class_names"] = [f"other-{n}" for n in names]
    torch.save(payload, deployed)
    proc = revise_cli(params, tmp_path / "request.yaml")
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "differ from the dataset's" in ln]
    assert len(lines) == 1 and str(deployed) in lines[0] and "other-0" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_revise_cli_refuses_an_empty_label_with_a_written_report(tmp_path, demo_dir, demo_model):
    """An empty label cell: exit 1 with one message, no traceback, and reports/validation.json
    written with the row (the report used to crash on NAType and never be written)."""

    import pandas as pd

    dataset = tmp_path / "demo"
    shutil.copytree(demo_dir, dataset)
    params = make_project(
        tmp_path, dataset, demo_model, {"reason": "class_retirement", "selector": {"labels": ["3"]}}
    )
    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[5, "label"] = ""  # emptied after the export was materialised
    manifest.to_csv(dataset / "manifest.csv", index=False)
    proc = revise_cli(params, tmp_path / "request.yaml")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "revise refused: " in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (proc.stderr + proc.stdout).count("revise refused") == 1
    # the failed expectation is shown once (the task's log says one line; issue 27)
    assert (proc.stderr + proc.stdout).count("required value") == 1, proc.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    empty = next(o for o in report["outcomes"] if o["column"] == "label" and not o["success"])
    assert empty["examples"][0]["row"] == 6 and empty["examples"][0]["label"] is None
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["deployed.pt"]


def test_broken_image_fails_validation_before_training(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    from flows.maintenance import maintenance_flow

    dataset = tmp_path / "demo"
    shutil.copytree(demo_dir, dataset)
    manifest = (dataset / "manifest.csv").read_text().splitlines()
    broken_id, broken_path = manifest[6].split(",")[:2]
    (dataset / broken_path).write_bytes(b"not an image")
    params = make_project(
        tmp_path, dataset, demo_model, {"reason": "class_retirement", "selector": {"labels": ["3"]}}
    )
    with pytest.raises(ValidationFailed) as failure:
        maintenance_flow(str(params))
    text = str(failure.value)
    assert "cannot be decoded" in text and broken_id in text and "'row': 6" in text
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert not report["success"]


def test_consent_patient_still_in_retain_fails_validation(
    tmp_path, prefect_harness, demo_dir, demo_model, demo_splits
) -> None:
    from flows.maintenance import maintenance_flow

    train = demo_splits.manifest[demo_splits.manifest["split"] == "train"]
    patient = train["patient_id"].value_counts().index[0]  # a patient with several images
    one_image = train.loc[train["patient_id"] == patient, "image_id"].iloc[0]
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "consent_withdrawal", "selector": {"image_ids": [one_image]}},
    )
    with pytest.raises(ValidationFailed) as failure:
        maintenance_flow(str(params))
    text = str(failure.value)
    assert "withdrawing patient still has images in retain-train" in text
    assert "pt-" in text and str(patient) not in text  # hashed, never the raw id


def test_rerun_after_a_failed_sweep_reuses_finished_runs(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    """The second sweep entry fails (as a crash would) after the first finished; the re-run
    gets the first from the result cache (same finish time) and computes only the second."""
    from flows.maintenance import maintenance_flow

    request = {"reason": "class_retirement", "selector": {"labels": ["3"]}}
    gates = {"class_retirement": LENIENT}
    # valid settings that fail at run time (no CUDA here), as a crash mid-sweep would
    broken = [SWEEP[0], {"name": "psg-b", "method": "psg", "settings": {"device": "cuda"}}]
    params = make_project(
        tmp_path, demo_dir, demo_model, request, gates, sweep=broken, compose={"enabled": False}
    )
    with pytest.raises(Exception, match="no CUDA device"):
        maintenance_flow(str(params))
    first = list((tmp_path / "work").glob("psg-a-*.pt"))
    assert len(first) == 1
    params = make_project(
        tmp_path, demo_dir, demo_model, request, gates, sweep=SWEEP, compose={"enabled": False}
    )
    result = maintenance_flow(str(params))
    assert {c["name"] for c in result["candidates"]} == {"psg-a", "psg-b"}
    assert list((tmp_path / "work").glob("psg-a-*.pt")) == first
    again = maintenance_flow(str(params))  # everything cached now: identical results
    assert [c["metrics"] for c in again["candidates"]] == [
        c["metrics"] for c in result["candidates"]
    ]
    assert (
        again["timings"]["cached_runs"] == 2
        and again["timings"]["compute_seconds"]["unlearn"] == 0.0
    )
    assert list((tmp_path / "work" / "results").iterdir())  # the cache lives with the run
    first[0].unlink()  # a cache record whose checkpoint is gone is recomputed, not trusted
    healed = maintenance_flow(str(params))
    assert healed["timings"]["cached_runs"] == 1 and first[0].is_file()
    assert [c["metrics"] for c in healed["candidates"]] == [
        c["metrics"] for c in result["candidates"]
    ]


@pytest.mark.slow
def test_ham_device_deprecation_end_to_end(tmp_path, prefect_harness, shared_data) -> None:
    """Real dermoscopy images, forget every vienna_dias image, small budget."""
    from flows.maintenance import maintenance_flow
    from medunlearn.data import from_csv, materialise
    from medunlearn.data.dataset import open_splits
    from medunlearn.models import build_model
    from medunlearn.models.training import TrainConfig, train_classifier

    dataset = tmp_path / "ham"
    materialise(
        from_csv(shared_data / "ham10000_sites" / "manifest.csv", group_column="lesion_id"),
        dataset,
        image_size=32,
        channels=3,
    )
    d = open_splits(dataset)
    model = build_model("allcnn", len(d.info.class_names), 3, 32, seed=0, width=0.25)
    cfg = TrainConfig(epochs=6, lr=3e-3, seed=0, class_weights="balanced")
    model = train_classifier(model, d.train, d.val, d.info.class_names, cfg).model
    params = make_project(
        tmp_path,
        dataset,
        model,
        {"reason": "device_deprecation", "selector": {"devices": ["vienna_dias"]}},
        # retention is not what this test is about: a weak 32-pixel model retrained varies
        gates={"device_deprecation": {"max_retain_drop": 0.15, "max_balanced_drop": 0.15}},
        sweep=[
            {"name": "gentle", "method": "psg", "settings": {"lr": 1e-5}},
            {
                "name": "retrain",  # the deployed model's recipe, without the device
                "method": "retrain",
                "settings": {"epochs": 6, "lr": 3e-3, "class_weights": "balanced"},
            },
        ],
    )
    result = maintenance_flow(str(params))
    by_name = {c["name"]: c for c in result["candidates"]}
    # a retrain without the device's images passes the device_deprecation profile
    assert by_name["retrain"]["gates"]["passed"]
    selected = by_name[result["selected"]]
    assert selected["gates"]["passed"]
    checks = {c["name"]: c for c in selected["gates"]["checks"]}
    assert checks["membership"]["status"] == "pass" and checks["membership"]["role"] == "required"
    matching = selected["metrics"]["membership"]["matching"]
    assert matching["columns"] == ["label", "device"]  # held-out images of the same device
    # this device's held-out images are too few for 57 members: paired 1:1 per stratum
    assert not matching["exact"] and matching["per_member"] == 1
    assert matching["unmatched_members"] > 0
    assert result["baseline"]["checks"]  # the deployed model's own gate result is reported
    assert (
        read_onnx_metadata(tmp_path / "models" / "candidate" / "model.onnx")["request_reason"]
        == "device_deprecation"
    )
    assert result["export"]["parity"]["passed"]


@pytest.mark.slow
def test_rerun_after_killing_the_flow_mid_sweep_reuses_finished_runs(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    """SIGKILL the flow process while the slow sweep entry still runs; the re-run takes the
    finished entry from the persisted result cache (its checkpoint is not rewritten)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from flows.maintenance import maintenance_flow

    request = {"reason": "class_retirement", "selector": {"labels": ["3"]}}
    gates = {"class_retirement": LENIENT}
    slow = {"name": "slow", "method": "psg", "settings": {"lr": 3e-4, "epochs": 400}}

    def project(slow_entry: dict) -> Path:
        return make_project(
            tmp_path,
            demo_dir,
            demo_model,
            request,
            gates,
            sweep=[SWEEP[0], slow_entry],
            compose={"enabled": False},
        )

    params = project(slow)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "revise", "--params", str(params)],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while not list((tmp_path / "work").glob("psg-a-*.pt")) and time.time() < deadline:
            assert proc.poll() is None, "the flow ended before it could be killed"
            time.sleep(0.5)
        time.sleep(5)  # let Prefect persist the finished task's result
        assert proc.poll() is None, "the slow entry should still be running"
    finally:
        if proc.poll() is None:  # else the assertion above says why it ended
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (finished,) = list((tmp_path / "work").glob("psg-a-*.pt"))
    stamp = finished.stat().st_mtime_ns
    params = project({**slow, "settings": {"lr": 3e-4, "epochs": 1}})
    result = maintenance_flow(str(params))
    assert {c["name"] for c in result["candidates"]} == {"psg-a", "slow"}
    assert finished.stat().st_mtime_ns == stamp, "the finished run was recomputed"


@pytest.mark.slow
def test_shipped_consent_request_passes_on_the_demo(
    tmp_path, prefect_harness, demo_dir, demo_model
):
    """requests/withdraw_consent.yaml (two demo patients, 8 images) with the shipped sweep and
    gates: patients live in one split, so there is no forget-test cohort; the profile compares
    their images with matched held-out rows instead, and the revision can pass."""
    from flows.maintenance import maintenance_flow

    repo = Path(__file__).resolve().parents[1]
    shipped = yaml.safe_load((repo / "params.yaml").read_text())
    request = yaml.safe_load((repo / "requests" / "withdraw_consent.yaml").read_text())
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        request,
        gates=shipped["gates"],
        sweep=shipped["maintain"]["sweep"],
        sweep_by_reason=shipped["maintain"]["sweep_by_reason"],
    )
    config = yaml.safe_load(params.read_text())
    config["unlearn"] = shipped["unlearn"]
    params.write_text(yaml.safe_dump(config))
    result = maintenance_flow(str(params))
    selected = next(c for c in result["candidates"] if c["name"] == result["selected"])
    checks = {c["name"]: c for c in selected["gates"]["checks"]}
    assert selected["metrics"]["forget_test_acc"] is None  # no held-out twin
    assert checks["membership"]["status"] == "pass" and checks["membership"]["underpowered"]
    # two patients, four images each: the test counts patients, not images
    assert selected["metrics"]["membership"]["unit"] == "group"
    assert "underpowered: 2 forgotten group(s)" in checks["membership"]["detail"]
    # the untouched model shows no measurable memorisation of these 8 images either, and the
    # report says so instead of presenting the pass as evidence of change
    assert result["baseline"]["passed"]
    assert "already passes this profile" in result["summary"]
    # each sweep entry ran what its name says: no two candidates with one config
    configs = [json.dumps(c["config"], sort_keys=True) for c in result["candidates"]]
    assert len(set(configs)) == len(configs)


def test_single_image_outlier_request_is_decided_without_a_heldout_twin(
    tmp_path, prefect_harness, demo_dir, demo_model, demo_splits
):
    """An outlier chosen by image id has no held-out row of its own: the class-style check is
    not in its profile, and the membership checks compare it with matched held-out rows."""
    from flows.maintenance import maintenance_flow

    image = demo_splits.manifest.query("split == 'train'")["image_id"].iloc[0]
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "outlier_removal", "selector": {"image_ids": [image]}},
        gates={"outlier_removal": {"max_retain_drop": 1.0, "max_balanced_drop": 1.0}},
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    result = maintenance_flow(str(params))
    gates = result["candidates"][0]["gates"]
    statuses = {c["name"]: c["status"] for c in gates["checks"]}
    assert gates["passed"] and "forget_heldout_acc" not in statuses
    assert statuses["membership"] == "pass" and statuses["member_accuracy_gap"] == "pass"
    assert result["candidates"][0]["metrics"]["membership"]["n_members"] == 1


def test_revision_is_registered_with_production_as_parent(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    """The registry on: the deployed model is production v1.0.0; a consent revision becomes
    v1.1.0 (candidate + staging, parent v1.0.0) with its card; no raw patient id anywhere;
    a refused run registers nothing and production stays byte-identical."""
    import subprocess
    import sys

    from flows.maintenance import maintenance_flow
    from medunlearn.revision.registry import Registry

    repo = Path(__file__).resolve().parents[1]
    request = yaml.safe_load((repo / "requests" / "withdraw_consent.yaml").read_text())
    lenient = {"max_retain_drop": 1.0, "max_balanced_drop": 1.0}  # about the registry
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        request,
        gates={"consent_withdrawal": lenient},
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    config = yaml.safe_load(params.read_text())
    config["registry"] = {"enabled": True, "model": "classifier"}
    config["ledger"] = {"enabled": True, "path": "ledger/requests.jsonl"}
    config["promotion"] = {"auto_staging": True, "serving_dir": "models/production"}
    params.write_text(yaml.safe_dump(config))
    git_dvc_project(tmp_path)
    reg = Registry(tmp_path)
    first = tmp_path / "models" / ".first"
    first.mkdir()
    shutil.copy2(tmp_path / "models" / "deployed.pt", first / "model.pt")
    export_first(first)
    reg.register("classifier", first, {"gates": {"passed": True}, "kind": "trained"}, "v1.0.0")
    reg.promote("classifier", "v1.0.0", "staging", "tester", "first")
    reg.promote("classifier", "v1.0.0", "production", "tester", "first")
    served = sha(tmp_path / "models" / "production" / "model.pt")

    from medunlearn.data.request import ForgetRequest

    reversible = ForgetRequest.from_dict(request).hash  # no salt set yet
    result = maintenance_flow(str(params))
    assert result["version"] == "v1.1.0"
    assert sha(tmp_path / "models" / "production" / "model.pt") == served  # only staged
    assert reg.stages("classifier") == {
        "candidate": "v1.1.0",
        "staging": "v1.1.0",
        "production": "v1.0.0",
    }
    record = reg.record("classifier", "v1.1.0")
    assert record["parent"] == "v1.0.0" and record["gates"]["passed"]
    assert record["parent_sha256"] == sha(
        tmp_path / "models" / "classifier" / "v1.0.0" / "model.pt"
    )
    files = tmp_path / "models" / "classifier" / "v1.1.0"
    assert {"model.pt", "model.onnx", "reports/maintenance.md"} <= set(record["artifacts"])
    for rel, digest in record["artifacts"].items():
        assert sha(files / rel) == digest
    card = (reg.record_dir("classifier", "v1.1.0") / "card.md").read_text()
    assert "consent_withdrawal" in card and "membership attack" in card
    report = reg.record_dir("classifier", "v1.1.0") / "report.html"  # committed with the card
    named = f"classifier v1.1.0 · request consent_withdrawal {record['request_hash']}"
    assert f"<title>Revision report: {named}</title>" in report.read_text()
    assert report.resolve().as_uri() in _artifact_markdown("revision-report-classifier")
    tracked = subprocess.run(
        ["git", "ls-files", "registry/classifier/v1.1.0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "registry/classifier/v1.1.0/report.html" in tracked
    # the briefly trained demo model shows no memorisation of these patients (measured: it
    # passes the consent profile itself on AVX2 and AVX-512 kernels), so the card must say
    # the pass cannot tell the two apart; were it to fail the profile, no such caveat
    metrics = json.loads((files / "reports" / "metrics_details.json").read_text())
    deployed_passes = metrics["deployed_gates"]["passed"]
    assert record["deployed_gates_passed"] is deployed_passes
    caveat = "not discriminating: the deployed model passes the consent_withdrawal profile too"
    for shown in (record["caveats"], metrics["caveats"], card):
        assert (caveat in shown) is deployed_passes
    listing = subprocess.run(
        [sys.executable, "-m", "cli", "registry", "--json", "--params", str(params)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    texts = [listing, card] + [
        p.read_text() for p in reg.record_dir("classifier", "v1.1.0").iterdir()
    ]
    onnx_props = read_onnx_metadata(files / "model.onnx")
    assert onnx_props["registry_version"] == "v1.1.0"
    assert json.loads(onnx_props["retired_classes"]) == []  # consent retires no class
    texts.append(onnx_props["metrics"])
    ledger_file = tmp_path / "ledger" / "requests.jsonl"
    texts.append(ledger_file.read_text())
    for rel in record["artifacts"]:
        if rel.endswith((".md", ".json", ".csv")):
            texts.append((files / rel).read_text())
    for text in texts:
        for patient in request["selector"]["patient_ids"]:
            assert patient not in text
        assert reversible not in text  # the unsalted request hash can be brute-forced
    (consent,) = [json.loads(line) for line in ledger_file.read_text().splitlines()]
    assert consent["status"] == "applied in v1.1.0"
    assert [r["id"] for r in record["requests"]] == [consent["id"]]
    committed = subprocess.run(
        ["git", "show", "--name-only", "--format=", "classifier@v1.1.0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ledger/requests.jsonl" in committed  # the status change is in the revision's commit

    # a later revision keeps the consent withdrawal: production v1.1.0 already forgot its
    # patients, so they are in neither cohort (not unlearned again, never retained), and the
    # consent gates are re-checked on the new model
    if record["caveats"]:  # the rule itself: tests/test_registry.py
        with pytest.raises(RegistryError, match="weak evidence"):
            reg.promote("classifier", "v1.1.0", "production", "tester", "reviewed")
    reg.promote("classifier", "v1.1.0", "production", "tester", "reviewed", accept="demo data")
    retire = tmp_path / "retire.yaml"
    retire.write_text(yaml.safe_dump({"reason": "class_retirement", "selector": {"labels": ["3"]}}))
    config["gates"]["class_retirement"] = {"max_forget_acc": 0.05, **lenient}
    # a consent-only sweep entry: it would run were the inherited consent unlearned again
    config["maintain"]["sweep_by_reason"] = {
        "consent_withdrawal": [{"name": "psg-consent", "method": "psg", "settings": {"phi": 2}}]
    }
    params.write_text(yaml.safe_dump(config))
    later = maintenance_flow(str(params), str(retire))
    assert later["version"] == "v1.2.0"
    assert [c["name"] for c in later["candidates"]] == ["psg-a"]  # the new reason's only
    record = reg.record("classifier", "v1.2.0")
    assert record["parent"] == "v1.1.0"
    ids = [r["id"] for r in record["requests"]]
    assert ids[0] == consent["id"] and len(ids) == 2  # it still applies both
    retire_id = ids[1]
    assert record["inherited"] == [consent["id"]]
    assert record["rechecks"][consent["id"]]["reason"] == "consent_withdrawal"
    assert record["rechecks"][consent["id"]]["passed"]
    # retention of the earlier request is measured on this revision's retain cohorts (class 3
    # and the consent patients left out), so it is the number the new request's check measured
    own = {c["name"]: c["value"] for c in record["gates"]["checks"]}
    again = {c["name"]: c["value"] for c in record["rechecks"][consent["id"]]["checks"]}
    assert again["retain_drop"] == pytest.approx(own["retain_drop"], abs=1e-12)
    manifest = pd.read_csv(demo_dir / "manifest.csv", dtype=str)
    train = manifest["split"] == "train"
    patients = manifest["patient_id"].isin(request["selector"]["patient_ids"])
    digit = {d: manifest["label"] == d for d in ("3", "5")}
    # forget-train is exactly the new request's rows: the demo's class-3 training images
    assert record["counts"]["forget_train"] == int((train & digit["3"]).sum()) == 118
    assert record["counts"]["retain_train"] == int((train & ~digit["3"] & ~patients).sum())
    assert record["counts"]["inherited_train"] == int((train & patients & ~digit["3"]).sum()) > 0
    card = (reg.record_dir("classifier", "v1.2.0") / "card.md").read_text()
    assert f"`{consent['id']}`: reason **consent_withdrawal**" in card
    assert "already forgotten by the parent, not unlearned again" in card

    # v1.2.0 is only staged: a revision from production v1.1.0 forgets class 3 again (the
    # v1.1.0 weights never forgot it) with the new class 5, inherits the consent, and
    # re-checks both earlier requests
    retire5 = tmp_path / "retire5.yaml"
    retire5.write_text(
        yaml.safe_dump({"reason": "class_retirement", "selector": {"labels": ["5"]}})
    )
    third = maintenance_flow(str(params), str(retire5))
    assert third["version"] == "v1.3.0"
    record = reg.record("classifier", "v1.3.0")
    assert record["parent"] == "v1.1.0" and record["inherited"] == [consent["id"]]
    assert [r["id"] for r in record["requests"]][:2] == [consent["id"], retire_id]
    assert len(record["requests"]) == 3
    assert set(record["rechecks"]) == {consent["id"], retire_id}
    assert record["rechecks"][retire_id]["reason"] == "class_retirement"
    assert all(g["passed"] for g in record["rechecks"].values())
    both = digit["3"] | digit["5"]
    assert record["counts"]["forget_train"] == int((train & both).sum())
    assert record["counts"]["retain_train"] == int((train & ~both & ~patients).sum())
    assert record["counts"]["inherited_train"] == int((train & patients & ~both).sum())

    # v1.3.0 in production applies all three: a refused class-7 request from it forgets only
    # class 7 (whose metrics file still says so), and nothing is registered or served
    reg.promote("classifier", "v1.3.0", "production", "tester", "reviewed", accept="demo data")
    served = sha(tmp_path / "models" / "production" / "model.pt")
    other = tmp_path / "retire7.yaml"
    other.write_text(yaml.safe_dump({"reason": "class_retirement", "selector": {"labels": ["7"]}}))
    config["gates"]["class_retirement"] = {"max_forget_acc": -1.0}  # nothing can pass
    params.write_text(yaml.safe_dump(config))
    with pytest.raises(GatesFailed):
        maintenance_flow(str(params), str(other))
    counts = json.loads((tmp_path / "reports" / "metrics_details.json").read_text())["counts"]
    seven = manifest["label"] == "7"
    assert counts["forget_train"] == int((train & seven).sum())
    assert counts["inherited_train"] == int((train & (both | patients) & ~seven).sum())
    assert reg.versions("classifier") == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
    assert sha(tmp_path / "models" / "production" / "model.pt") == served
    assert not list((tmp_path / "models").glob(".revision-*"))
    statuses = [json.loads(line)["status"] for line in ledger_file.read_text().splitlines()]
    assert statuses[:3] == ["applied in v1.1.0", "applied in v1.2.0", "applied in v1.3.0"]
    assert len(statuses) == 4 and statuses[3].startswith("rejected: ")


def test_a_diverging_run_is_reported_and_never_harms_the_revision(
    tmp_path, prefect_harness, demo_dir, demo_model, monkeypatch
) -> None:
    """A sweep entry whose weights blow up (lr 1e6: measured NaN in every layer) is marked
    failed with its reason, leaves no checkpoint, is never composed, and the revision goes on
    with the good runs; an interpolation made non-finite is rejected the same way."""
    import torch

    import tasks.compose_candidates as compose_step
    from flows.maintenance import maintenance_flow

    def poisoned(a, b, alpha, retain):  # stands in for a composition that diverged
        model = compose_step.swap(a, b)
        with torch.no_grad():
            model.classifier.weight[0, 0] = float("nan")
        return model

    monkeypatch.setattr(compose_step, "interpolate", poisoned)
    diverging = {"name": "diverges", "method": "psg", "settings": {"lr": 1e6}}
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        gates={"class_retirement": RETIRE_DIGIT_GATES},
        sweep=[SWEEP[0], diverging, SWEEP[1]],
        compose={"enabled": True, "alphas": [0.5], "fine_tune_epochs": 1},
    )
    result = maintenance_flow(str(params))

    names = {c["name"] for c in result["candidates"]}
    assert "diverges" not in names and "interp-0.5" not in names and "psg-a" in names
    assert result["selected"] in names
    assert not list((tmp_path / "work").glob("diverges-*.pt")), "no checkpoint of a failed run"
    metrics = json.loads((tmp_path / "reports" / "metrics_details.json").read_text())
    failed = {f["name"]: f for f in metrics["failed_runs"]}
    assert set(failed) == {"diverges", "interp-0.5"}
    assert "non-finite tensor(s)" in failed["diverges"]["reason"]
    assert failed["interp-0.5"]["kind"] == "interpolate"
    summary = (tmp_path / "reports" / "maintenance.md").read_text()
    assert "`diverges` (sweep): method 'psg' diverged" in summary
    swap = next(c for c in result["candidates"] if c["name"] == "swap")
    assert "diverges" not in (swap["config"]["features"], swap["config"]["head"])
    card = (tmp_path / "models" / "candidate" / "card.md").read_text()
    assert "`diverges` (sweep): method 'psg' diverged" in card
    card_json = json.loads((tmp_path / "models" / "candidate" / "card.json").read_text())
    assert {f["name"] for f in card_json["failed_runs"]} == {"diverges", "interp-0.5"}
    chosen = next(c for c in result["candidates"] if c["name"] == result["selected"])
    assert chosen["gates"]["passed"] is True


def test_a_sweep_whose_every_run_diverged_is_refused_with_a_report(
    tmp_path, prefect_harness, demo_dir, demo_model
) -> None:
    from flows.maintenance import maintenance_flow

    diverging = {"name": "diverges", "method": "psg", "settings": {"lr": 1e6}}
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        gates={"class_retirement": LENIENT},
        sweep=[diverging],
        compose={"enabled": True},
    )
    with pytest.raises(
        GatesFailed, match=r"no candidate of 0 passed .*1 run\(s\) failed: diverges"
    ):
        maintenance_flow(str(params))
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    details = json.loads((tmp_path / "reports" / "metrics_details.json").read_text())
    assert metrics["passed"] is False and [f["name"] for f in details["failed_runs"]] == [
        "diverges"
    ]
    summary = (tmp_path / "reports" / "maintenance.md").read_text()
    assert "`diverges` (sweep): method 'psg' diverged" in summary
    assert "No candidate passed" in summary
    assert not (tmp_path / "models" / "candidate").exists()
    assert not list((tmp_path / "work").glob("*.pt"))


def test_a_failed_report_after_export_leaves_no_model(
    tmp_path, prefect_harness, demo_dir, demo_model, monkeypatch
) -> None:
    """The report fails after the ONNX export: no candidate folder, no staging leftovers, and
    a candidate of an earlier run is left as it was (the revision folder moves as one)."""
    import flows.revision_steps as steps
    from flows.maintenance import maintenance_flow

    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        {"reason": "class_retirement", "selector": {"labels": ["3"]}},
        gates={"class_retirement": LENIENT},
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    earlier = tmp_path / "models" / "candidate"
    earlier.mkdir(parents=True)
    (earlier / "model.pt").write_bytes(b"earlier revision")

    def broken(*args, **kwargs):
        raise OSError("disk full while writing the report")

    monkeypatch.setattr(steps, "write_revision_report", broken)
    with pytest.raises(OSError, match="disk full"):
        maintenance_flow(str(params))
    assert sorted(p.name for p in earlier.iterdir()) == ["model.pt"]
    assert (earlier / "model.pt").read_bytes() == b"earlier revision"
    assert not list((tmp_path / "models").glob(".revision-*"))


def _artifact_markdown(key: str) -> str:
    """The newest Prefect artifact under ``key`` (the harness's API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)


@pytest.mark.parametrize(
    ("request_", "gates", "caveat"),
    [
        # bounds no model can fail (accuracy <= 1, drops <= 1): the deployed model passes by
        # construction, so the pass cannot tell the revision from it
        (
            {"reason": "class_retirement", "selector": {"labels": ["3"]}},
            {"class_retirement": LENIENT},
            "not discriminating: the deployed model passes the class_retirement profile too",
        ),
        # one patient, 4 images < gates.min_members (10): membership cannot reach p < alpha
        (
            "withdraw_consent_one_patient.yaml",
            None,
            "underpowered: membership",
        ),
    ],
    ids=["deployed-passes", "one-patient"],
)
def test_every_report_says_what_a_pass_cannot_show(
    tmp_path, prefect_harness, demo_dir, demo_model, request_, gates, caveat
) -> None:
    from flows.maintenance import maintenance_flow

    repo = Path(__file__).resolve().parents[1]
    shipped = yaml.safe_load((repo / "params.yaml").read_text())
    if isinstance(request_, str):
        request_ = yaml.safe_load((repo / "requests" / request_).read_text())
    params = make_project(
        tmp_path,
        demo_dir,
        demo_model,
        request_,
        gates=gates or shipped["gates"],
        sweep=SWEEP[:1],
        compose={"enabled": False},
    )
    if gates is None:  # the shipped gates with bounds loose enough for this tiny model
        config = yaml.safe_load(params.read_text())
        config["gates"]["consent_withdrawal"].update(max_retain_drop=1.0, max_balanced_drop=1.0)
        params.write_text(yaml.safe_dump(config))
    result = maintenance_flow(str(params))
    if gates is not None:
        assert result["baseline"]["passed"] is True
    metrics = json.loads((tmp_path / "reports" / "metrics_details.json").read_text())
    assert any(c.startswith(caveat) for c in metrics["caveats"]), metrics["caveats"]
    shown = {
        "card.md": (tmp_path / "models" / "candidate" / "card.md").read_text(),
        "card.json": (tmp_path / "models" / "candidate" / "card.json").read_text(),
        "maintenance.md": (tmp_path / "reports" / "maintenance.md").read_text(),
        "artifact maintenance-summary": _artifact_markdown("maintenance-summary"),
    }
    for where, text in shown.items():
        assert caveat in text, f"{where} does not say '{caveat}'"
