"""Every zoo model keeps the contract composition and drift detection rely on."""

from __future__ import annotations

import pytest
import torch

from medunlearn.models import MODEL_NAMES, build_model, rebuild

CASES = [(name, size) for name in MODEL_NAMES for size in (28, 64)]


@pytest.mark.parametrize(("name", "size"), CASES)
def test_contract(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, in_channels=3, image_size=size).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        z = model.features(x)
        logits = model(x)
    assert z.shape == (2, model.embedding_dim)
    assert logits.shape == (2, 5)
    assert torch.allclose(model.head(z), logits, atol=1e-6)
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"norm", "body", "classifier"}
    assert set(model.head_state()) == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalisation_lives_inside_the_model(name: str) -> None:
    model = build_model(name, 3, 1, 28).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        before = model.features(x)
        model.norm.set_statistics([0.5], [0.25])
        after = model.features(x)
        manual = model.body((x - 0.5) / 0.25)
    assert not torch.equal(before, after)
    assert torch.allclose(after, manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_rebuild_from_config_has_identical_structure(name: str) -> None:
    model = build_model(name, 4, 3, 28, **({"width": 0.5} if name == "allcnn" else {}))
    clone = rebuild(model.config)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in clone.state_dict().items()
    }


def test_allcnn_width_scales_filters() -> None:
    assert build_model("allcnn", 2, 1, 28, width=1.0).embedding_dim == 192
    assert build_model("allcnn", 2, 1, 28, width=0.25).embedding_dim == 48


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("vgg", {}, "unknown model 'vgg'"),
        ("resnet19", {}, "unknown model 'resnet19'; did you mean 'resnet18'?"),
        ("densenet121", {"width": 2}, "model_kwargs.width: not an option of 'densenet121'"),
        ("allcnn", {"widht": 0.5}, "model_kwargs.widht: not an option of 'allcnn'; did you mean"),
    ],
)
def test_unknown_model_and_option(name, kwargs, message) -> None:
    """Issue 27: a misspelt model or option was a traceback; now a refusal naming the key."""
    from medunlearn.errors import Refusal

    with pytest.raises(Refusal, match=message):
        build_model(name, 2, 1, 28, **kwargs)


def test_seeded_build_is_immune_to_runs_seeding_in_other_threads() -> None:
    """The flows run sweep entries in threads of one process: another run seeding the global
    RNG (its ``seed_everything``) while a model is initialised must not change the weights."""
    import threading

    from medunlearn.models.device import seed_everything

    expected = build_model("allcnn", 3, 1, 28, seed=5, width=0.5).state_dict()
    stop = threading.Event()

    def other_run() -> None:
        while not stop.is_set():
            seed_everything(0)

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        builds = [build_model("allcnn", 3, 1, 28, seed=5, width=0.5) for _ in range(20)]
    finally:
        stop.set()
        thread.join()
    for model in builds:
        for name, value in model.state_dict().items():
            assert torch.equal(value, expected[name]), name
