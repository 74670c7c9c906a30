"""The logit cache serves every cohort cut from a split with one forward pass of the split."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import ConcatDataset

from medunlearn.models.inference import LogitCache, predict_logits


def test_cohorts_cut_from_a_split_share_its_forward_pass(demo_model, demo_splits) -> None:
    test = demo_splits.test
    rng = np.random.default_rng(0)
    a = test.subset(rng.random(len(test)) < 0.3)
    b = a.subset(rng.random(len(a)) < 0.5)  # a cut of a cut
    both = ConcatDataset([b, demo_splits.val.subset(np.arange(len(demo_splits.val)) < 7)])
    calls = []
    hook = demo_model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        cache = LogitCache(demo_model)
        got = {name: cache(d) for name, d in {"a": a, "b": b, "both": both}.items()}
        cache(test)
    finally:
        hook.remove()
    # one pass over test and one over val, whatever was asked
    assert sum(calls) == len(test) + len(demo_splits.val)
    for name, d in {"a": a, "b": b, "both": both}.items():
        logits, labels = predict_logits(demo_model, d)  # computed directly, cohort by cohort
        assert torch.equal(got[name][1], labels), name
        assert torch.allclose(got[name][0], logits, atol=1e-5), name
    empty = test.subset(np.zeros(len(test), dtype=bool))
    assert len(cache(empty)[1]) == 0


def test_cpu_batches_hold_a_pixel_budget_and_do_not_change_the_logits(
    demo_model, demo_splits
) -> None:
    from medunlearn.models.inference import inference_batch_size

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert inference_batch_size(demo_splits.test, cpu) == 41  # 32768 // (28 * 28)
    assert inference_batch_size(demo_splits.test, gpu) == 256
    big = torch.utils.data.TensorDataset(torch.zeros(3, 3, 64, 64), torch.zeros(3))
    small = torch.utils.data.TensorDataset(torch.zeros(3, 1, 8, 8), torch.zeros(3))
    assert inference_batch_size(big, cpu) == 8  # 32768 // 4096
    assert inference_batch_size(small, cpu) == 256  # capped
    default, labels = predict_logits(demo_model, demo_splits.test)
    whole, same = predict_logits(demo_model, demo_splits.test, batch_size=len(demo_splits.test))
    assert torch.equal(labels, same)
    assert torch.allclose(default, whole, atol=1e-5)
