"""How the maintenance flow settles requests (flows/settlement.py): scheduled maintenance
with nothing pending touches nothing; a crashed request ends failed and committed; a busy
registry leaves it pending; a bad pending request is rejected and the queue goes on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from projects import registry_project, tree_hashes

REPO = Path(__file__).resolve().parents[1]


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
    refused naming the lock (``RegistryBusy``, a refusal: one line and exit 1 at the CLI,
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
