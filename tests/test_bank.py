"""The benchmark's model bank: one training per key, and the key covers every input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medunlearn.models.bank import ModelBank, rows_hash


def _demo_bank(tmp_path, demo_dir, d, recipe, read_only: bool = False) -> ModelBank:
    """A bank of width-0.25 allcnn models on the 28-pixel demo."""
    allcnn = {"name": "allcnn", "kwargs": {"width": 0.25}}
    return ModelBank(
        tmp_path, allcnn, recipe, d.info.class_names, 1, 28, demo_dir, read_only=read_only
    )


def test_bank_trains_once_and_keys_on_rows_seed_and_recipe(tmp_path, demo_dir, demo_splits):
    d = demo_splits
    recipe = {"epochs": 1, "lr": 3e-3, "batch_size": 64}
    bank = _demo_bank(tmp_path, demo_dir, d, recipe)
    first, cost, cached = bank.get(d.train, d.val, seed=0)
    assert not cached and cost["seconds"] > 0 and cost["cpu_seconds"] > 0
    again, cost_again, cached_again = bank.get(d.train, d.val, seed=0)
    assert cached_again and cost_again == cost  # the original training's cost, from the file
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    )
    fewer = d.train.subset(np.arange(len(d.train)) > 0)  # one training row less
    keys = {
        bank.key(d.train, d.val, 0),
        bank.key(d.train, d.val, 1),
        bank.key(fewer, d.val, 0),
        _demo_bank(tmp_path, demo_dir, d, {**recipe, "lr": 1e-3}).key(d.train, d.val, 0),
    }
    assert len(keys) == 4
    assert rows_hash(fewer) != rows_hash(d.train)
    (tmp_path / f"{bank.key(d.train, d.val, 0)}.pt").write_bytes(b"not a checkpoint")
    _, _, cached_broken = bank.get(d.train, d.val, seed=0)  # unreadable: retrained, not trusted
    assert not cached_broken
    reader = _demo_bank(tmp_path, demo_dir, d, recipe, read_only=True)
    assert reader.get(d.train, d.val, seed=0)[2]  # held: loaded
    with pytest.raises(LookupError, match="holds no model"):
        reader.get(d.train, d.val, seed=7)  # not held: refused, not trained
    assert not (tmp_path / f"{bank.key(d.train, d.val, 7)}.pt").exists()


def test_bank_key_follows_the_decoded_pixels_not_the_decoder_source(
    tmp_path, demo_dir, demo_splits
):
    """One changed pixel (a decoder fix that alters the input) gives a new key; the same
    pixels decoded again into a new object keep it, so decoder refactors keep the bank."""
    from medunlearn.data.images import LabelledImages

    d = demo_splits
    bank = ModelBank(
        tmp_path,
        {"name": "allcnn", "kwargs": {}},
        {"epochs": 1},
        d.info.class_names,
        1,
        28,
        demo_dir,
    )
    images = d.train.all_images().clone()
    same = LabelledImages(d.train.rows, d.train.labels.clone(), images=images.clone())
    images[0, 0, 0, 0] = 1.0 - images[0, 0, 0, 0]
    changed = LabelledImages(d.train.rows, d.train.labels.clone(), images=images)
    assert bank.key(same, d.val, 0) == bank.key(d.train, d.val, 0)
    assert bank.key(changed, d.val, 0) != bank.key(d.train, d.val, 0)


def test_source_hash_can_leave_out_a_folder(tmp_path) -> None:
    from medunlearn.versioning import source_hash

    (tmp_path / "data").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "data" / "decode.py").write_text("y = 1\n")
    full, core = source_hash(tmp_path), source_hash(tmp_path, exclude=("data",))
    (tmp_path / "data" / "decode.py").write_text("y = 2\n")
    assert source_hash(tmp_path) != full and source_hash(tmp_path, exclude=("data",)) == core
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_hash(tmp_path, exclude=("data",)) != core
