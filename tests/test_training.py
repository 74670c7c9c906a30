"""Training: learns real data, is seeded, picks the best validation epoch."""

from __future__ import annotations

import pytest
import torch

from medunlearn.data.dataset import open_splits
from medunlearn.models import build_model
from medunlearn.models.evaluation import classification_metrics, evaluate
from medunlearn.models.training import TrainConfig, channel_statistics, train_classifier

FAST = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "augmentation": {"rotate_deg": 5, "shift": 0.05}}


def train_demo(demo_dir, seed: int = 0, **overrides):
    data = open_splits(demo_dir)
    model = build_model("allcnn", 10, 1, 28, seed=seed, width=0.25)
    cfg = TrainConfig(**{**FAST, "seed": seed, **overrides})
    return data, train_classifier(model, data.train, data.val, data.info.class_names, cfg)


@pytest.fixture(scope="module")
def trained(demo_dir):
    return train_demo(demo_dir)


def test_learns_the_demo(trained) -> None:
    data, result = trained
    metrics = evaluate(result.model, data.test, data.info.class_names)
    assert metrics["accuracy"] > 0.7  # chance is 0.1
    assert metrics["macro_auc"] > 0.95
    assert len(result.history) == 3 and result.seconds_per_epoch > 0


def test_best_epoch_is_the_best_on_validation(trained) -> None:
    data, result = trained
    scores = [h.val_balanced_accuracy for h in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    restored = evaluate(result.model, data.val, data.info.class_names)["balanced_accuracy"]
    assert restored == pytest.approx(max(scores))


def test_normalisation_is_set_from_training_images(trained) -> None:
    data, result = trained
    mean, std = channel_statistics(data.train)
    assert result.model.norm.statistics()["mean"] == pytest.approx(mean, rel=1e-5)
    assert result.model.norm.statistics()["std"] == pytest.approx(std, rel=1e-5)
    assert 0.2 < mean[0] < 0.5


def test_same_seed_same_weights_other_seed_differs(demo_dir) -> None:
    _, first = train_demo(demo_dir, seed=0, epochs=1)
    _, again = train_demo(demo_dir, seed=0, epochs=1)
    _, other = train_demo(demo_dir, seed=1, epochs=1)
    w = first.model.classifier.weight
    assert torch.equal(w, again.model.classifier.weight)
    assert not torch.equal(w, other.model.classifier.weight)


def small_demo(demo_dir, n: int = 96):
    data = open_splits(demo_dir)
    return data, data.train.subset(torch.arange(len(data.train)) < n)


def sgd(**overrides) -> TrainConfig:
    """Plain SGD (no momentum, decay or schedule): rounding-sized gradient differences stay
    rounding-sized (Adam divides by the gradient's running magnitude, so a rounding-sized
    difference in a near-zero gradient becomes an lr-sized step)."""
    return TrainConfig(
        **{**FAST, "epochs": 1, "scheduler": "none", **overrides},
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
    )


@pytest.mark.parametrize(
    "option",
    [
        pytest.param("channels_last", id="channels_last"),
        # a cold inductor compilation takes about a minute on 2 cores
        pytest.param("compile", id="compile", marks=pytest.mark.slow),
    ],
)
def test_speed_options_train_the_same_model_up_to_rounding(
    demo_dir, tmp_path, monkeypatch, option
) -> None:
    """NHWC activations and a compiled step are speed options, not a different computation:
    after three plain SGD steps each weight tensor differs from the default run's by at most
    1e-4 and by under a tenth of its own update, and the model comes back eager and
    NCHW-contiguous. (Measured for channels_last: 3.3e-7 on an AMD EPYC; 1.5e-5, at most
    3.7% of the update, on an AVX-512 Xeon, whose NHWC kernels sum in another order and flip
    a few ReLUs. A layout bug, e.g. a permuted weight, moves weights by their whole update.)"""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    data, small = small_demo(demo_dir)
    runs = {}
    for on in (False, True):
        model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
        runs[on] = train_classifier(
            model, small, data.val, data.info.class_names, sgd(**{option: on})
        ).model
    init = build_model("allcnn", 10, 1, 28, seed=0, width=0.25).state_dict()
    for name, before in init.items():
        a, b = runs[False].state_dict()[name].float(), runs[True].state_dict()[name].float()
        assert (a - b).abs().max() <= 1e-4, name
        update = (a - before.float()).norm()
        assert (a - b).norm() <= 0.1 * update + 1e-7, name
    # the steps did move the weights: the comparison is not of two initialisations
    assert (runs[True].classifier.weight - init["classifier.weight"]).abs().max() > 1e-4
    assert type(runs[True]) is type(runs[False])
    # every 4-D weight back in NCHW (a 1-channel first conv is contiguous in both layouts)
    weights = [p for p in runs[True].parameters() if p.ndim == 4 and p.shape[1] > 1]
    assert weights and all(p.is_contiguous() for p in weights)


def test_channels_last_reaches_the_convolutions_in_training(demo_dir) -> None:
    """With ``channels_last`` the training forward really runs NHWC (an inner convolution
    sees a channels-last input); without it, NCHW."""
    data, small = small_demo(demo_dir, 64)
    for on in (False, True):
        model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
        inner = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]
        seen: list[bool] = []

        def record(module, args, seen=seen) -> None:
            x = args[0]
            if module.training:
                seen.append(x.is_contiguous(memory_format=torch.channels_last))

        inner.register_forward_pre_hook(record)
        train_classifier(model, small, data.val, data.info.class_names, sgd(channels_last=on))
        assert seen and all(s == on for s in seen), (on, seen)


@pytest.mark.parametrize(
    ("asked", "native", "expected"),
    [
        pytest.param(False, True, torch.float32, id="off"),
        pytest.param(True, True, torch.bfloat16, id="native"),
        pytest.param(True, False, torch.float32, id="emulated-falls-back"),
    ],
)
def test_cpu_bf16_runs_training_convolutions_in_bf16_only_where_native(
    demo_dir, monkeypatch, caplog, asked, native, expected
) -> None:
    """``cpu_bf16``: training-step convolutions compute in bf16 on a CPU with native bf16,
    in float32 where it is off or the CPU lacks it (with a warning); validation stays float32
    and the weights stay float32 (``native`` is forced both ways: CPU autocast itself runs
    everywhere, only slower without native support)."""
    import logging

    from medunlearn.models import device as device_module

    monkeypatch.setattr(device_module, "native_cpu_bf16", lambda: native)
    device_module._warn_no_native_bf16.cache_clear()
    data, small = small_demo(demo_dir, 64)
    model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
    inner = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]
    seen: dict[bool, set] = {True: set(), False: set()}
    inner.register_forward_hook(lambda m, a, out: seen[m.training].add(out.dtype))
    with caplog.at_level(logging.WARNING, logger="medunlearn.models.device"):
        trained = train_classifier(
            model, small, data.val, data.info.class_names, sgd(cpu_bf16=asked, device="cpu")
        ).model
    assert seen[True] == {expected} and seen[False] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    assert ("no native bf16" in caplog.text) == (asked and not native)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "onednn", "expected"),
    [
        pytest.param(True, False, True, True, id="avx512-bf16"),
        pytest.param(False, True, True, True, id="amx"),
        # plain AVX-512 (Skylake to Ice Lake): oneDNN says yes but would emulate bf16
        pytest.param(False, False, True, False, id="plain-avx512"),
        # the instructions exist but oneDNN is capped below them (ONEDNN_MAX_CPU_ISA=AVX2)
        pytest.param(True, True, False, False, id="onednn-capped"),
    ],
)
def test_native_cpu_bf16_needs_the_instructions_and_onednn(
    monkeypatch, avx512_bf16, amx, onednn, expected
) -> None:
    from medunlearn.models import device as device_module

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(device_module, "_onednn_allows_bf16", lambda: onednn)
    device_module.native_cpu_bf16.cache_clear()
    try:
        assert device_module.native_cpu_bf16() is expected
    finally:
        device_module.native_cpu_bf16.cache_clear()


def test_compile_wraps_the_training_step_only(demo_dir, monkeypatch) -> None:
    """``compile: true`` hands the model to ``torch.compile`` once and runs every training
    step through what it returns; validation and the returned model stay the eager module.
    (A counting stand-in for ``torch.compile``: the real compilation is the slow case of the
    test above.)"""
    data, small = small_demo(demo_dir, 64)
    calls: list[str] = []

    class Compiled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def forward(self, x):
            calls.append("step" if self.inner.training else "eval")
            return self.inner(x)

    compiled_from: list[torch.nn.Module] = []

    def fake_compile(model, *args, **kwargs):
        compiled_from.append(model)
        return Compiled(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    for on in (False, True):
        calls.clear()
        model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
        result = train_classifier(
            model, small, data.val, data.info.class_names, sgd(compile=on, epochs=2)
        )
        assert calls == (["step"] * 4 if on else [])  # 2 epochs x 2 batches of 32
        assert type(result.model) is type(model)
    assert len(compiled_from) == 1


def test_the_training_augmentation_changes_what_the_model_sees(demo_dir) -> None:
    """Same initialisation, same shuffle: one epoch with the augmentation ends on other
    weights than one without, and the same augmentation twice on the same weights."""
    data, small = small_demo(demo_dir)
    weights = {}
    for name, spec in {
        "off": {},
        "on": {"rotate_deg": 10, "shift": 0.1},
        "again": {"rotate_deg": 10, "shift": 0.1},
    }.items():
        model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
        cfg = sgd(augmentation=spec)
        weights[name] = train_classifier(
            model, small, data.val, data.info.class_names, cfg
        ).model.classifier.weight
    assert torch.equal(weights["on"], weights["again"])
    assert not torch.allclose(weights["on"], weights["off"], rtol=1e-3, atol=1e-5)


def test_metrics_on_known_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.tensor(
        [
            [0.9, 0.1, 0.0],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.6, 0.3],
            [0.0, 0.1, 0.9],
            [0.2, 0.2, 0.6],
        ]
    )
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["per_class"]["a"] == {"n": 2, "accuracy": 0.5}
    assert m["macro_auc"] == pytest.approx((7.5 / 8 + 7 / 8 + 1) / 3)  # ties count half
    single = classification_metrics(torch.tensor([1, 1]), probs[:2], ["a", "b", "c"])
    assert single["macro_auc"] is None


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="select_metric"):
        TrainConfig.from_params({"select_metric": "f1"})


@pytest.mark.slow
def test_learns_real_chest_xrays(shared_data, tmp_path) -> None:
    """PneumoniaMNIST subset (real paediatric chest X-rays): two short epochs beat chance."""
    from medunlearn.data import from_medmnist, materialise

    source = from_medmnist(shared_data / "medmnist" / "pneumoniamnist_subset.npz")
    materialise(source, tmp_path / "pneumonia", image_size=28, channels=1)
    data = open_splits(tmp_path / "pneumonia")
    model = build_model("allcnn", 2, 1, 28, seed=0, width=0.25)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=0)
    result = train_classifier(model, data.train, data.val, data.info.class_names, cfg)
    test = evaluate(result.model, data.test, data.info.class_names)
    assert test["n"] == 468
    assert test["accuracy"] > 0.75 and test["macro_auc"] > 0.85  # balanced classes: chance is 0.5


def test_training_headline_keeps_only_the_headline_figures() -> None:
    """The file ``dvc metrics show`` reads: ten flat keys from a hand-built report whose
    per-class figures (61 leaves in the demo's) stay in the whole report."""
    from medunlearn.models.training import training_headline

    report = {
        "role": "deployed",
        "model": "allcnn",
        "data_version": "abc",
        "best_epoch": 3,
        "epochs": 4,
        "seconds_per_epoch": 1.5,
        "n_train": 10,
        "val": {"accuracy": 0.9, "per_class": {"0": {"accuracy": 1.0}}},
        "test": {"accuracy": 0.8, "balanced_accuracy": 0.75, "per_class": {"0": {"n": 3}}},
    }
    assert training_headline(report) == {
        "role": "deployed",
        "model": "allcnn",
        "data_version": "abc",
        "best_epoch": 3,
        "epochs": 4,
        "seconds_per_epoch": 1.5,
        "val.accuracy": 0.9,
        "test.accuracy": 0.8,
        "test.balanced_accuracy": 0.75,
        "test.macro_auc": None,  # not in this report: said, not guessed
    }
