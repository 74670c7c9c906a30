"""ONNX export (dynamic batch, metadata, checker, parity) and candidate selection."""

from __future__ import annotations

import pytest
import torch

from medunlearn.export import check_parity, export_onnx, read_metadata
from medunlearn.revision import CandidateResult, run_timings, select_candidate, tradeoff_csv


def test_onnx_export_dynamic_batch_metadata_and_parity(tmp_path, demo_model, demo_splits) -> None:
    import onnxruntime as ort

    path = tmp_path / "m.onnx"
    example = demo_splits.val.all_images()[:2]
    export_onnx(demo_model, path, example, {"revision_id": "rev-x", "metrics": {"acc": 0.5}})
    props = read_metadata(path)
    assert props["revision_id"] == "rev-x" and props["metrics"] == '{"acc": 0.5}'
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):  # the batch axis is dynamic
        x = demo_splits.val.all_images()[:n]
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert out.shape == (n, 10)
    parity = check_parity(demo_model, path, demo_splits.val)
    assert parity.passed and parity.max_abs_diff < 1e-4 and parity.n_images == len(demo_splits.val)


def test_parity_catches_a_different_model(tmp_path, demo_model, demo_splits) -> None:
    import copy

    path = tmp_path / "m.onnx"
    export_onnx(demo_model, path, demo_splits.val.all_images()[:2])
    other = copy.deepcopy(demo_model)
    with torch.no_grad():
        other.classifier.bias.add_(0.5)
    parity = check_parity(other, path, demo_splits.val)
    assert not parity.passed and parity.max_abs_diff == pytest.approx(0.5, abs=1e-3)


def candidate(
    name: str,
    passed: bool,
    retain: float,
    forget: float,
    auc: float = 0.5,
    reason: str = "class_retirement",
) -> CandidateResult:
    return CandidateResult(
        name,
        "sweep",
        {},
        {"retain_test_acc": retain, "forget_train_acc": forget, "membership": {"auc": auc}},
        {"passed": passed, "checks": [], "reason": reason},
    )


def test_selection_rule() -> None:
    cs = [
        candidate("a", False, 0.99, 0.0),
        candidate("b", True, 0.90, 0.02),
        candidate("c", True, 0.90, 0.01),
        candidate("d", True, 0.80, 0.0),
    ]
    assert select_candidate(cs).name == "c"  # best retain among passing; tie -> lower forget
    assert select_candidate([candidate("a", False, 0.99, 0.0)]) is None
    # consent: equal retention, the tie goes to the model whose forgotten images look unseen
    # (AUC 0.52), not to the one that over-forgot them (forget acc 0.0, AUC 0.30)
    consent = [
        candidate("over", True, 0.90, 0.0, auc=0.30, reason="consent_withdrawal"),
        candidate("unseen", True, 0.90, 0.6, auc=0.52, reason="consent_withdrawal"),
        candidate("kept", True, 0.90, 1.0, auc=0.60, reason="consent_withdrawal"),
    ]
    assert select_candidate(consent).name == "unseen"
    with pytest.raises(ValueError, match="select_by"):
        select_candidate(cs, "forget_test_acc")
    csv_text = tradeoff_csv(cs, "c").splitlines()
    assert csv_text[0].startswith("candidate,kind,forget_train_acc") and len(csv_text) == 5
    assert csv_text[3].endswith("True,True")


def test_run_timings_subtract_task_compute_and_ignore_cached_runs() -> None:
    laps = {"load": 1.0, "validate": 2.0, "unlearn": 12.0, "compose": 3.0, "evaluate": 4.0}
    runs = [  # two overlapping fresh runs (100-108, 102-110) and one restored from the cache
        {"finished_at": 108.0, "seconds": 8.0},
        {"finished_at": 110.0, "seconds": 8.0},
        {"finished_at": 50.0, "seconds": 9.0},
    ]
    t = run_timings(laps, runs, [{"seconds": 1.5}, {"seconds": 0.5}], 3.0, flow_started_at=99.0)
    assert t["compute_seconds"] == {"unlearn": 10.0, "compose": 2.0, "evaluate": 3.0}
    assert t["flow_seconds"] == 22.0 and t["overhead_seconds"] == 7.0
    assert t["cached_runs"] == 1 and t["step_seconds"] == laps
    cached = run_timings(laps, runs[2:], [], 3.0, flow_started_at=99.0)
    assert cached["compute_seconds"]["unlearn"] == 0.0 and cached["overhead_seconds"] == 19.0
