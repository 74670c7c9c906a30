"""Checkpoints: weights-only loading, full metadata, atomic writes."""

from __future__ import annotations

import pickle

import pytest
import torch

from medunlearn.models import build_model
from medunlearn.models.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    describe,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


def small_model():
    torch.manual_seed(0)
    model = build_model("allcnn", 3, 1, 28, width=0.125)
    model.norm.set_statistics([0.3], [0.2])
    return model.eval()


def test_roundtrip_restores_outputs_and_metadata(tmp_path) -> None:
    model = small_model()
    meta = CheckpointMeta.for_model(
        model,
        ["a", "b", "c"],
        28,
        data_version="abc.dir",
        params_hash="123",
        metrics={"test": {"accuracy": 0.5, "balanced_accuracy": 0.4, "macro_auc": None, "n": 3}},
    )
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded_meta.class_names == ["a", "b", "c"] and loaded_meta.input_shape == [1, 28, 28]
    assert loaded_meta.normalization["mean"] == pytest.approx([0.3])
    assert loaded_meta.data_version == "abc.dir" and loaded_meta.created_at
    assert read_metadata(path).architecture == model.config
    assert "test accuracy 0.500" in describe(loaded_meta, path)


def test_pickled_code_is_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "medunlearn.models.checkpoint/1", "x": Evil()}))
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        load_checkpoint(path)


def test_foreign_file_and_mismatched_weights(tmp_path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a medunlearn.models.checkpoint/1 file"):
        load_checkpoint(tmp_path / "other.pt")
    model = small_model()
    meta = CheckpointMeta.for_model(model, ["a", "b", "c"], 28)
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["architecture"]["kwargs"]["width"] = 0.25
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights do not fit allcnn"):
        load_checkpoint(path)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = small_model()
    meta = CheckpointMeta.for_model(model, ["a", "b", "c"], 28)
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, meta)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
