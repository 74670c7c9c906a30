"""The prepare and train flows end to end under a Prefect test harness, on the demo."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from medunlearn.data import ManifestError
from medunlearn.models.checkpoint import load_checkpoint

TRAIN = {
    "model": "allcnn",
    "model_kwargs": {"width": 0.25},
    "epochs": 3,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.003,
    "seed": 0,
    "augmentation": {},
}


def write_params(tmp: Path, data: dict | None = None, train: dict | None = None) -> Path:
    params = {
        "data": {
            "name": "demo",
            "source": "demo",
            "image_size": 28,
            "channels": 1,
            "root": str(tmp / "data"),
            "track_with_dvc": False,
            **(data or {}),
        },
        "train": {
            "dataset": str(tmp / "data" / "demo"),
            **TRAIN,
            "output": str(tmp / "models" / "deployed.pt"),
            "report": str(tmp / "reports" / "train_report.json"),
            "metrics": str(tmp / "reports" / "train_metrics.json"),
            "history": str(tmp / "reports" / "train_history.csv"),
            "retrain_output": str(tmp / "models" / "retrain.pt"),
            "retrain_report": str(tmp / "reports" / "retrain_metrics.json"),
            **(train or {}),
        },
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory, prefect_harness):
    from flows.prepare import prepare_flow
    from flows.train import train_flow

    tmp = tmp_path_factory.mktemp("project")
    params = write_params(tmp)
    prepared = prepare_flow(str(params))
    report = train_flow(str(params))
    return tmp, params, prepared, report


def test_prepare_then_train(trained_project) -> None:
    tmp, _, prepared, report = trained_project
    assert prepared["counts"] == {"train": 1150, "val": 288, "test": 359}
    assert prepared["data_version"] is None  # track_with_dvc is off here
    model, meta = load_checkpoint(tmp / "models" / "deployed.pt")
    assert meta.extra["role"] == "deployed" and meta.class_names == [str(i) for i in range(10)]
    assert meta.metrics["test"]["accuracy"] == report["test"]["accuracy"] > 0.6
    on_disk = json.loads((tmp / "reports" / "train_report.json").read_text())
    headline = json.loads((tmp / "reports" / "train_metrics.json").read_text())
    assert headline["test.accuracy"] == on_disk["test"]["accuracy"]  # the same run's figure
    assert headline["role"] == "deployed" and len(headline) == 10
    assert on_disk["test"] == report["test"] and on_disk["n_train"] == 1150
    with open(tmp / "reports" / "train_history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_summary_names_the_essentials(trained_project) -> None:
    from cli.pipeline import train_summary

    _, _, _, report = trained_project
    text = train_summary(report)
    assert "trained deployed model 'allcnn'" in text and "test accuracy" in text
    assert "per-class accuracy: 0 " in text


def test_retrain_reference_never_sees_the_excluded_rows(trained_project) -> None:
    from flows.train import train_flow

    tmp, params, _, deployed = trained_project
    report = train_flow(str(params), role="retrain", exclude="label == '3'")
    assert report["role"] == "retrain" and report["exclude"] == "label == '3'"
    assert report["n_train"] < deployed["n_train"] and report["n_test"] == deployed["n_test"]
    _, meta = load_checkpoint(tmp / "models" / "retrain.pt")
    assert meta.extra["role"] == "retrain"
    # a model that never saw a '3' in training does not predict '3' well
    assert report["test"]["per_class"]["3"]["accuracy"] < 0.2
    with pytest.raises(ValueError, match="needs --exclude"):
        train_flow(str(params), role="retrain")


def test_failed_prepare_leaves_data_untouched(trained_project, tmp_path) -> None:
    from flows.prepare import prepare_flow

    tmp, _, _, _ = trained_project
    manifest = tmp / "data" / "demo" / "manifest.csv"
    before = manifest.read_bytes()
    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.csv").write_text(
        "image_id,path,label,split\nx,missing.png,a,train\ny,missing.png,a,val\nz,missing.png,a,test\n"
    )
    params = write_params(tmp, data={"source": "csv", "path": str(export / "manifest.csv")})
    with pytest.raises(ManifestError, match="file not found"):
        prepare_flow(str(params))
    assert manifest.read_bytes() == before


def test_failed_train_leaves_the_checkpoint_untouched(trained_project) -> None:
    from flows.train import train_flow

    tmp, _, _, _ = trained_project
    checkpoint = tmp / "models" / "deployed.pt"
    before = checkpoint.read_bytes()
    params = write_params(tmp, train={"model": "no-such-model"})
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        train_flow(str(params))
    assert checkpoint.read_bytes() == before


def tree_digest(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            digest.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return digest.hexdigest()


def test_refused_export_prints_one_message_and_touches_nothing(trained_project, tmp_path) -> None:
    """`medunlearn prepare` on a file of 3-D volumes: exit 1, one message naming the
    file and key, no traceback, and data/ and models/ exactly as they were."""
    import os
    import subprocess
    import sys

    import numpy as np

    tmp, _, _, _ = trained_project
    npz = tmp_path / "volumes.npz"
    np.savez(
        npz,
        **{f"{s}_images": np.zeros((4, 28, 28, 28), np.uint8) for s in ("train", "val", "test")},
        **{f"{s}_labels": np.zeros((4, 1), np.int64) for s in ("train", "val", "test")},
    )
    params = write_params(tmp, data={"name": "demo", "source": "medmnist", "path": str(npz)})
    before = tree_digest(tmp / "data"), tree_digest(tmp / "models")
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "prepare", "--params", str(params)],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "prepare refused: " in proc.stderr
    assert output.count("volumes.npz: key 'train_images': shape (4, 28, 28, 28)") == 1, output
    assert "Traceback" not in output
    assert (tree_digest(tmp / "data"), tree_digest(tmp / "models")) == before
