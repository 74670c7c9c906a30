"""Composition works for every zoo model, and does what it says."""

from __future__ import annotations

import pytest
import torch

from medunlearn.models import MODEL_NAMES, build_model
from medunlearn.unlearn.compose import Candidate, fine_tune, interpolate, pareto_front, swap


def randomise_norm_layers(model, seed: int) -> None:
    """Untrained nets have BN at identity and some (EfficientNet) give near-zero features:
    random BN parameters make features, and so the test, non-degenerate."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def pair(name: str):
    a = build_model(name, 4, 3, 28, seed=1).eval()
    b = build_model(name, 4, 3, 28, seed=2).eval()
    with torch.no_grad():  # give the heads and the normalisation distinct values
        randomise_norm_layers(a, 1)
        randomise_norm_layers(b, 2)
        b.classifier.weight.mul_(3.0)
        a.norm.set_statistics([0.4, 0.5, 0.6], [0.2, 0.2, 0.2])
    return a, b


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_swap_is_features_of_a_and_head_of_b(name: str) -> None:
    a, b = pair(name)
    x = torch.rand(3, 3, 28, 28)
    composed = swap(a, b)
    with torch.no_grad():
        out = composed(x)
        assert torch.allclose(out, b.head(a.features(x)), atol=1e-5)
        assert not torch.allclose(out, a(x)) and not torch.allclose(out, b(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_interpolation_endpoints(name: str, demo_splits) -> None:
    a, b = pair(name)
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(interpolate(a, b, 0.0)(x), a(x))
        assert torch.equal(interpolate(a, b, 1.0)(x), b(x))
    mid = interpolate(a, b, 0.5)
    key = "classifier.weight"
    assert torch.allclose(mid.state_dict()[key], (a.state_dict()[key] + b.state_dict()[key]) / 2)


def test_interpolation_recomputes_bn_on_retain(demo_splits) -> None:
    a = build_model("allcnn", 10, 1, 28, seed=1, width=0.125)
    b = build_model("allcnn", 10, 1, 28, seed=2, width=0.125)
    import numpy as np

    retain = demo_splits.val.subset(np.arange(len(demo_splits.val)) < 256)  # two equal batches
    mid = interpolate(a, b, 0.5, retain=retain)
    key = "body.layers.0.1.running_mean"
    assert not torch.equal(mid.state_dict()[key], torch.zeros_like(mid.state_dict()[key]))
    with torch.no_grad():  # recomputed mean = mean of first conv outputs over the retain images
        conv = mid.body.layers[0][0]
        feats = conv(mid.norm(retain.images))
    assert torch.allclose(mid.state_dict()[key], feats.mean(dim=(0, 2, 3)), atol=1e-4)


def test_fine_tune_with_frozen_features_changes_only_the_head(demo_splits) -> None:
    a = build_model("allcnn", 10, 1, 28, seed=1, width=0.125).eval()
    tuned = fine_tune(a, demo_splits.val, epochs=1, lr=1e-2, freeze_features=True)
    sa, st = a.state_dict(), tuned.state_dict()
    assert all(torch.equal(sa[k], st[k]) for k in sa if not k.startswith("classifier."))
    assert not torch.equal(sa["classifier.weight"], st["classifier.weight"])


def test_incompatible_models_are_refused() -> None:
    with pytest.raises(ValueError, match="architectures differ"):
        swap(build_model("allcnn", 4, 3, 28), build_model("resnet18", 4, 3, 28))


def test_pareto_front() -> None:
    cands = [
        Candidate("a", 0.9, 0.7),
        Candidate("b", 0.8, 0.9),
        Candidate("c", 0.7, 0.6),
        Candidate("d", 0.9, 0.7),
    ]
    assert [c.name for c in pareto_front(cands)] == ["a", "b", "d"]
