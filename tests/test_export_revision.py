"""ONNX export (dynamic batch, metadata, checker, parity) and candidate selection."""

from __future__ import annotations

import pytest
import torch

from medunlearn.export import check_parity, export_onnx, read_metadata
from medunlearn.revision import CandidateResult, select_candidate, tradeoff_csv


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


def candidate(name: str, passed: bool, retain: float, forget: float) -> CandidateResult:
    return CandidateResult(
        name,
        "sweep",
        {},
        {"retain_test_acc": retain, "forget_test_acc": forget, "mia_loss": {"auc": 0.5}},
        {"passed": passed, "checks": []},
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
    with pytest.raises(ValueError, match="select_by"):
        select_candidate(cs, "forget_test_acc")
    csv_text = tradeoff_csv(cs, "c").splitlines()
    assert csv_text[0].startswith("candidate,kind,forget_test_acc") and len(csv_text) == 5
    assert csv_text[3].endswith("True,True")
