"""Shared fixtures: telemetry off, an isolated Prefect home, real data, a small demo dataset."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports prefect/dvc: no telemetry, and a throwaway Prefect home.
os.environ.update(
    DO_NOT_TRACK="1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    DVC_NO_ANALYTICS="1",
    ORT_DISABLE_TELEMETRY="1",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
    PREFECT_HOME=tempfile.mkdtemp(prefix="medunlearn-prefect-"),
)

import pytest  # noqa: E402
import torch  # noqa: E402

from medunlearn.data import from_demo, materialise  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDUNLEARN_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: required in CI (a missing folder fails), optional elsewhere."""
    if not (SHARED / "medmnist" / "retinamnist.npz").is_file():
        message = f"shared data not found at {SHARED}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: tests on real data must run)")
        pytest.skip(message)
    return SHARED


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for all flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The embedded demo materialised once, read-only by convention."""
    target = tmp_path_factory.mktemp("data") / "demo"
    materialise(from_demo(), target, image_size=28, channels=1)
    return target


@pytest.fixture(scope="session")
def demo_splits(demo_dir):
    from medunlearn.data.dataset import open_splits

    return open_splits(demo_dir)


@pytest.fixture(scope="session")
def demo_model(demo_splits):
    """A small allcnn trained briefly on the demo: the 'deployed' model of engine tests."""
    from medunlearn.models import build_model
    from medunlearn.models.training import TrainConfig, train_classifier

    model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=0)
    return train_classifier(
        model, demo_splits.train, demo_splits.val, demo_splits.info.class_names, cfg
    ).model


@pytest.fixture(scope="session")
def demo_cohorts(demo_splits):
    """Cohorts of the demo for 'retire class 3' (the engine tests' request)."""
    from medunlearn.data.request import ForgetRequest, build_cohorts

    d = demo_splits
    request = ForgetRequest("class_retirement", {"labels": ["3"]})
    return build_cohorts(d.manifest, d.train, d.val, d.test, d.info.class_names, request)


@pytest.fixture(autouse=True)
def _unsalted_identifiers():
    """A flow sets the project's identifier salt process-wide; each test starts without."""
    yield
    from medunlearn.data.manifest import set_identifier_salt

    set_identifier_salt(None)
