"""The method registry: every method runs with one signature, is seeded, leaves the deployed
model alone, and each baseline does what its paper says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medunlearn.evidence.metrics import accuracy_on
from medunlearn.unlearn import baselines
from medunlearn.unlearn.methods import (
    METHODS,
    MethodConfigError,
    psg_settings,
    run_method,
    selection_score,
)

# Small budgets: these tests check behaviour, the benchmark measures quality.
SMALL = {
    "retrain": {"epochs": 1, "batch_size": 64, "lr": 3e-3},
    "finetune": {"epochs": 1},
    "l1_sparse": {"epochs": 1},
    "neggrad_plus": {"epochs": 2},
    "random_label": {"epochs": 2},
    "boundary_shrink": {"epochs": 2, "lr": 1e-3},
    "boundary_expand": {"epochs": 2},
    "scrub": {"epochs": 1, "msteps": 1},
    "salun": {"epochs": 2},
    "psg": {"epochs": 2, "lr": 1e-3, "steps": 2, "step_size": 0.05},
    "psg_compose": {"sweep": [{"lr": 3e-4}, {"lr": 3e-3}], "psg": {"epochs": 2}, "alphas": [0.5]},
}


@pytest.fixture(scope="module")
def cohorts(demo_cohorts):
    """The demo cohorts cut to a few batches, so every method runs in seconds."""
    from dataclasses import replace

    def head(images, n):
        return images.subset(np.arange(len(images)) < n)

    c = demo_cohorts
    return replace(
        c,
        forget_train=head(c.forget_train, 64),
        retain_train=head(c.retain_train, 256),
        retain_val=head(c.retain_val, 128),
    )


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_registry_has_every_method_of_the_issue() -> None:
    assert set(METHODS) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_method_runs_is_seeded_and_leaves_deployed_model_alone(
    name, demo_model, cohorts, monkeypatch
):
    """... and never fetches an in-memory image one by one (issue 25: batches are cut by
    index; a per-image ``__getitem__``/``image`` call, e.g. a ``DataLoader``, fails here)."""
    x = cohorts.forget_train.images[:1]
    before = state(demo_model)

    def per_image(self, index):
        raise AssertionError(f"{name} fetched image {index} one by one")

    from medunlearn.data.images import LabelledImages

    monkeypatch.setattr(LabelledImages, "__getitem__", per_image)
    monkeypatch.setattr(LabelledImages, "image", per_image)
    a = run_method(name, demo_model, cohorts, {**SMALL[name], "seed": 0})
    torch.rand(17)  # other code drew from the global RNG: the seed alone decides the run
    b = run_method(name, demo_model, cohorts, {**SMALL[name], "seed": 0})
    monkeypatch.undo()
    assert same(state(demo_model), before), "the deployed model must never change"
    assert same(state(a), state(b)), "same settings and seed must give the same weights"
    assert not same(state(a), before), "the method must change the weights"
    assert not a.training
    assert a(x).shape == demo_model(x).shape


def test_unknown_setting_is_named(demo_model, cohorts) -> None:
    with pytest.raises(MethodConfigError, match="learning_rate"):
        run_method("finetune", demo_model, cohorts, {"learning_rate": 0.1})
    with pytest.raises(MethodConfigError, match="unknown method 'forget_all'"):
        run_method("forget_all", demo_model, cohorts, {})
    with pytest.raises(MethodConfigError, match="fixes"):
        run_method("boundary_shrink", demo_model, cohorts, {"gamma": 0.1})


def test_random_labels_are_uniform_over_all_classes_like_salun() -> None:
    # SalUn's RL draws torch.randint(0, num_classes): the true label can come up, 1/K of the time
    g = torch.Generator().manual_seed(3)
    draws = baselines.uniform_labels(20000, 10, g)
    counts = torch.bincount(draws, minlength=10).float() / len(draws)
    assert counts.min() > 0.09 and counts.max() < 0.11


def test_scrub_defaults_follow_the_paper_code() -> None:
    import inspect

    d = {
        k: p.default
        for k, p in inspect.signature(baselines.scrub).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    # meghdadk/SCRUB SCRUB_args (large-scale notebook)
    expected = {
        "alpha": 0.001,
        "gamma": 0.99,
        "temperature": 4.0,
        "msteps": 2,
        "epochs": 3,
        "lr": 5e-4,
        "lr_decay_epochs": (3, 5, 9),
        "lr_decay_rate": 0.1,
        "weight_decay": 5e-4,
        "momentum": 0.9,
        "batch_size": 128,
        "forget_batch_size": 32,
    }
    assert {k: d[k] for k in expected} == expected


def test_every_updating_method_applies_the_training_augmentation(demo_model, cohorts) -> None:
    """With the deployed model's recorded augmentation the update differs from a clean run;
    with ``augment: false`` it equals a model that has no augmentation recorded."""
    import copy

    plain = copy.deepcopy(demo_model)
    plain.train_augmentation = None
    augmented = copy.deepcopy(demo_model)
    augmented.train_augmentation = {"rotate_deg": 15, "shift": 0.1}
    for name in sorted(SMALL):
        if name == "retrain":
            continue  # retraining runs the training recipe itself
        cfg = {**SMALL[name], "seed": 0}
        off = (
            {**cfg, "psg": {**cfg["psg"], "augment": False}}
            if name == "psg_compose"
            else {
                **cfg,
                "augment": False,
            }
        )
        base = state(run_method(name, plain, cohorts, cfg))
        with_aug = state(run_method(name, augmented, cohorts, cfg))
        switched_off = state(run_method(name, augmented, cohorts, off))
        assert not same(with_aug, base), f"{name} ignored the recorded augmentation"
        assert same(switched_off, base), f"{name}: augment false must mean no augmentation"


def test_salun_moves_only_salient_weights(demo_model, cohorts) -> None:
    mask = baselines.saliency_mask(
        baselines.trainable_copy(demo_model, torch.device("cpu")),
        cohorts.forget_train,
        ratio=0.3,
        device=torch.device("cpu"),
    )
    kept = sum(m.sum() for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert 0.29 <= float(kept) <= 0.31
    out = run_method("salun", demo_model, cohorts, {"epochs": 2, "mask_ratio": 0.3})
    params = dict(demo_model.named_parameters())
    for name, p in out.named_parameters():
        frozen = mask[name] == 0
        assert torch.equal(p.detach()[frozen], params[name].detach()[frozen]), name
    assert accuracy_on(out, cohorts.forget_train) < accuracy_on(demo_model, cohorts.forget_train)


def test_neggrad_plus_raises_the_forget_loss(demo_model, cohorts) -> None:
    def forget_ce(model) -> float:
        x = cohorts.forget_train.all_images()
        with torch.no_grad():
            return float(F.cross_entropy(model(x), cohorts.forget_train.labels))

    out = run_method("neggrad_plus", demo_model, cohorts, {"epochs": 3, "alpha": 0.5})
    assert forget_ce(out) > forget_ce(demo_model) + 0.1


def test_l1_sparse_shrinks_weights_more_than_finetune(demo_model, cohorts) -> None:
    def l1(model) -> float:
        return float(sum(p.detach().abs().sum() for p in model.parameters()))

    plain = run_method("finetune", demo_model, cohorts, {"epochs": 1})
    sparse = run_method("l1_sparse", demo_model, cohorts, {"epochs": 1, "l1": 0.1})
    assert l1(sparse) < l1(plain) * 0.97


def test_scrub_max_steps_push_away_from_a_separate_frozen_teacher(demo_model, cohorts) -> None:
    """With max-steps the student ends farther from the teacher on forget images than the
    same run without them; were the teacher the student itself (the reference bug), the KL
    and its gradient would be zero and the max-steps would change nothing."""

    def kl_to_teacher(model) -> float:
        x = cohorts.forget_train.all_images()
        with torch.no_grad():
            return float(
                F.kl_div(
                    F.log_softmax(model(x), 1), F.softmax(demo_model(x), 1), reduction="batchmean"
                )
            )

    settings = {"epochs": 2, "alpha": 0.0, "gamma": 1.0, "lr": 2e-3}
    with_max = run_method("scrub", demo_model, cohorts, {**settings, "msteps": 2})
    without = run_method("scrub", demo_model, cohorts, {**settings, "msteps": 0})
    assert kl_to_teacher(with_max) > kl_to_teacher(without) * 1.5


def test_boundary_expand_keeps_classes_and_forgets(demo_model, cohorts) -> None:
    out = run_method("boundary_expand", demo_model, cohorts, {"epochs": 5, "lr": 1e-2})
    assert out.classifier.out_features == demo_model.classifier.out_features
    assert accuracy_on(out, cohorts.forget_train) < accuracy_on(demo_model, cohorts.forget_train)


def test_psg_compose_chooses_among_named_candidates(demo_model, cohorts) -> None:
    out = run_method("psg_compose", demo_model, cohorts, SMALL["psg_compose"])
    info = out.unlearn_info
    assert info["target"] == "zero"  # class retirement
    assert info["chosen"] in info["scores"]
    assert {"psg[0]", "psg[1]"} <= set(info["scores"])
    best = max(s["score"] for s in info["scores"].values())
    assert info["scores"][info["chosen"]]["score"] == best
    if info["best_retain"] != info["best_forget"]:
        assert {"swap", "interp[0.5]"} <= set(info["scores"])


def test_selection_score_heldout_target_is_zero_for_an_unchanged_model(demo_model, cohorts):
    s = selection_score(demo_model, cohorts, "zero", 1.0)
    assert s["score"] == pytest.approx(s["retain_val"] - s["forget"])
    assert s["forget"] > 0.5  # the deployed model still knows the class


def test_psg_settings_apply_reason_overrides() -> None:
    section = {"lr": 1e-3, "epochs": 10, "by_reason": {"device_deprecation": {"lr": 1e-5}}}
    assert psg_settings(section, "device_deprecation") == {"lr": 1e-5, "epochs": 10}
    assert psg_settings(section, "class_retirement") == {"lr": 1e-3, "epochs": 10}
    with pytest.raises(MethodConfigError, match="unknown reason"):
        psg_settings({"by_reason": {"typo": {}}}, "class_retirement")
    with pytest.raises(ValueError, match="bogus"):
        psg_settings({"by_reason": {"class_retirement": {"bogus": 1}}}, "class_retirement")


def test_non_finite_weights_and_buffers_are_named() -> None:
    from medunlearn.unlearn.methods import Diverged, check_finite, non_finite_tensors

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert non_finite_tensors(model) == []
    check_finite(model, "clean")  # no error
    with torch.no_grad():
        model[0].bias[1] = float("nan")
        model[1].running_var[0] = float("inf")
    model[1].num_batches_tracked += 1  # an integer buffer is never reported
    assert non_finite_tensors(model) == ["0.bias", "1.running_var"]
    with pytest.raises(
        Diverged, match=r"run x diverged: 2 non-finite tensor\(s\) \(0.bias, 1.running_var\)"
    ):
        check_finite(model, "run x")


def test_run_method_rejects_a_run_whose_weights_became_nan(monkeypatch, demo_model, demo_cohorts):
    """Every method goes through one check: a run returning NaN weights raises Diverged
    naming the method, whatever the method is (a stand-in method that poisons one bias)."""
    import copy

    from medunlearn.unlearn import methods
    from medunlearn.unlearn.methods import Diverged, run_method

    def poisoning(model, cohorts, cfg):
        out = copy.deepcopy(model)
        with torch.no_grad():
            out.classifier.bias[0] = float("nan")
        return out.eval()

    monkeypatch.setitem(methods.METHODS, "poisoning", poisoning)
    monkeypatch.setitem(methods.METHOD_DEFAULTS, "poisoning", {})
    with pytest.raises(
        Diverged, match=r"method 'poisoning' diverged: 1 non-finite tensor\(s\) \(classifier.bias\)"
    ):
        run_method("poisoning", demo_model, demo_cohorts, {})
    monkeypatch.setitem(methods.METHODS, "poisoning", lambda m, c, cfg: copy.deepcopy(m).eval())
    assert run_method("poisoning", demo_model, demo_cohorts, {}) is not demo_model  # finite: fine


def test_run_method_rejects_finite_weights_with_non_finite_outputs(
    monkeypatch, demo_model, demo_cohorts
):
    """Finite weights can still overflow (issue 26: PSG at lr 3e-3 on the demo gave NaN
    logits and crashed evaluation): a head weight of 3e38, finite in float32, makes the
    class-0 logit of every image with a positive feature +inf."""
    import copy

    from medunlearn.unlearn import methods
    from medunlearn.unlearn.methods import Diverged, non_finite_tensors, run_method

    def overflowing(model, cohorts, cfg):
        out = copy.deepcopy(model)
        with torch.no_grad():
            out.classifier.weight[0] = 3e38
        return out.eval()

    monkeypatch.setitem(methods.METHODS, "overflowing", overflowing)
    monkeypatch.setitem(methods.METHOD_DEFAULTS, "overflowing", {})
    assert non_finite_tensors(overflowing(demo_model, demo_cohorts, {})) == []
    probes = sum(
        min(len(s), methods.PROBE_IMAGES)
        for s in (demo_cohorts.forget_train, demo_cohorts.retain_train, demo_cohorts.test)
    )
    with pytest.raises(
        Diverged,
        match=rf"method 'overflowing' diverged: non-finite outputs on [1-9]\d* of {probes} probe",
    ):
        run_method("overflowing", demo_model, demo_cohorts, {})


@pytest.mark.parametrize(
    ("schedule", "rates", "clip"),
    [
        ("constant", [0.1, 0.1, 0.1], 0.0),
        # cosine over 3 steps: lr * (1 + cos(pi * t / 3)) / 2 for t = 0, 1, 2
        ("cosine", [0.1, 0.075, 0.025], 0.0),
        # a norm bound below the gradients' norm (about 0.21 here), so clipping acts
        ("cosine", [0.1, 0.075, 0.025], 0.05),
    ],
)
def test_finetune_follows_its_learning_rate_schedule(schedule, rates, clip) -> None:
    """Three one-batch epochs of fine-tuning a linear model equal SGD with momentum and weight
    decay written out here at the hand-computed rates, with each gradient rescaled to norm
    ``clip`` when above it (one batch holds every image, so the shuffle cannot change the
    loss)."""
    import pandas as pd
    from torch import nn

    from medunlearn.data.images import LabelledImages

    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 2, 2, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    retain = LabelledImages(pd.DataFrame({"image_id": range(8)}), y, images=x)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    out = baselines.finetune(
        model,
        retain,
        retain,
        epochs=3,
        lr=0.1,
        batch_size=8,
        augment=False,
        schedule=schedule,
        max_grad_norm=clip,
        device="cpu",
    )
    w = [p.detach().clone() for p in model.parameters()]
    buf = [None, None]
    clipped: list[float] = []
    for rate in rates:
        params = [p.clone().requires_grad_(True) for p in w]
        loss = F.cross_entropy(x.flatten(1) @ params[0].T + params[1], y)
        grads = torch.autograd.grad(loss, params)
        norm = math.sqrt(sum(float((gr**2).sum()) for gr in grads))
        if clip and norm > clip:
            grads = [gr * (clip / norm) for gr in grads]
            clipped.append(norm)
        for i, grad in enumerate(grads):
            d = grad + 5e-4 * w[i]
            buf[i] = d if buf[i] is None else 0.9 * buf[i] + d
            w[i] = w[i] - rate * buf[i]
    assert bool(clipped) == bool(clip)  # the clipped case really clips
    for got, want in zip(out.parameters(), w, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def test_finetune_refuses_an_unknown_schedule(demo_model, cohorts) -> None:
    with pytest.raises(ValueError, match="schedule must be 'constant' or 'cosine'"):
        run_method("finetune", demo_model, cohorts, {"epochs": 1, "schedule": "step"})


@pytest.mark.parametrize(
    ("schedule", "rates"),
    [
        ("constant", [0.1, 0.1, 0.1, 0.1]),
        # 2 epochs x 2 batches, cosine over the 4 batches: 0.1 * (1 + cos(pi * t / 4)) / 2
        ("cosine", [0.1, 0.0853553, 0.05, 0.0146447]),
    ],
)
def test_finetune_steps_its_schedule_per_batch(schedule, rates, monkeypatch) -> None:
    """The rate changes every batch, not every epoch: the optimizer records the rate each of
    the 4 steps used (stepping once per epoch would use each rate for two steps)."""
    import pandas as pd
    from torch import nn

    from medunlearn.data.images import LabelledImages

    used: list[float] = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            used.append(self.param_groups[0]["lr"])
            return super().step(closure)

    def sgd(model, lr, momentum=0.9, weight_decay=0.0):
        return Recording(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    monkeypatch.setattr(baselines, "sgd", sgd)
    x = torch.rand(16, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    retain = LabelledImages(pd.DataFrame({"image_id": range(16)}), torch.arange(16) % 3, images=x)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    baselines.finetune(
        model,
        retain,
        retain,
        epochs=2,
        lr=0.1,
        batch_size=8,
        augment=False,
        schedule=schedule,
        device="cpu",
    )
    assert used == pytest.approx(rates, abs=1e-6)


def test_finetune_refuses_a_negative_gradient_norm(demo_model, cohorts) -> None:
    """clip_grad_norm_ with a negative bound flips the gradient (gradient ascent)."""
    with pytest.raises(ValueError, match="max_grad_norm must be >= 0"):
        run_method("finetune", demo_model, cohorts, {"epochs": 1, "max_grad_norm": -1.0})
