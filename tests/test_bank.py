"""The benchmark's model bank: one training per key, and the key covers every input."""

from __future__ import annotations

import numpy as np
import torch

from medunlearn.benchmark.bank import ModelBank, rows_hash


def test_bank_trains_once_and_keys_on_rows_seed_and_recipe(tmp_path, demo_dir, demo_splits):
    d = demo_splits
    recipe = {"epochs": 1, "lr": 3e-3, "batch_size": 64}
    bank = ModelBank(
        tmp_path,
        {"name": "allcnn", "kwargs": {"width": 0.25}},
        recipe,
        d.info.class_names,
        1,
        28,
        demo_dir,
    )
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
        ModelBank(
            tmp_path,
            {"name": "allcnn", "kwargs": {"width": 0.25}},
            {**recipe, "lr": 1e-3},
            d.info.class_names,
            1,
            28,
            demo_dir,
        ).key(d.train, d.val, 0),
    }
    assert len(keys) == 4
    assert rows_hash(fewer) != rows_hash(d.train)
    (tmp_path / f"{bank.key(d.train, d.val, 0)}.pt").write_bytes(b"not a checkpoint")
    _, _, cached_broken = bank.get(d.train, d.val, seed=0)  # unreadable: retrained, not trusted
    assert not cached_broken
