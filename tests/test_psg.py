"""The PSG engine: inner-problem geometry, Boundary Shrink equivalence, losses, BN handling."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from medunlearn.unlearn import PSGConfig, boundary_search, psg_unlearn
from medunlearn.unlearn.psg import (
    exclude_label,
    forget_loss,
    sample_noise,
    search_forget_set,
    shrink_to_boundary,
)


@pytest.fixture(scope="module")
def cohorts(demo_cohorts):
    return demo_cohorts


def batch(cohorts, n=32):
    forget = cohorts.forget_train
    return forget.images[:n].clone(), forget.labels[:n].clone()


def test_one_step_ascends_the_loss_inside_the_ball(demo_model, cohorts) -> None:
    x0, y = batch(cohorts)
    cfg = PSGConfig(steps=1, step_size=0.03, eps=0.03)
    found = boundary_search(demo_model, x0, y, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = F.cross_entropy(demo_model(x0), y, reduction="none")
        after = F.cross_entropy(demo_model(found.x_adv), y, reduction="none")
    assert (after > before).float().mean() > 0.9
    assert after.mean() > before.mean()
    assert (found.x_adv - x0).abs().max() <= 0.03 + 1e-6
    assert found.x_adv.min() >= 0 and found.x_adv.max() <= 1
    assert torch.equal(found.success, found.y_hat != y)


def test_lambda_pulls_back_towards_the_original(demo_model, cohorts) -> None:
    x0, y = batch(cohorts)
    distances = []
    for lam in (0.0, 1.0, 1000.0):
        cfg = PSGConfig(steps=8, step_size=0.02, eps=0.2, lam=lam, early_exit=False)
        found = boundary_search(demo_model, x0, y, cfg, torch.Generator().manual_seed(0))
        distances.append(float((found.x_adv - x0).abs().mean()))
    assert distances[0] >= distances[1] > distances[2]
    assert distances[2] < 0.5 * distances[0]


def test_psg_without_lambda_and_gamma_is_boundary_shrink(demo_model, cohorts) -> None:
    cfg = PSGConfig(
        steps=1, step_size=0.1, eps=0.1, lam=0.0, gamma=0.0, lr=1e-3, epochs=2, seed=3, device="cpu"
    )
    ours = psg_unlearn(demo_model, cohorts.forget_train, cohorts.retain_train, cfg).model
    reference = shrink_to_boundary(
        demo_model, cohorts.forget_train, eps=0.1, lr=1e-3, epochs=2, seed=3
    )
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert all(torch.equal(ours_state[k], ref_state[k]) for k in ref_state)
    assert not torch.equal(
        ours_state["classifier.weight"], demo_model.state_dict()["classifier.weight"]
    )


def test_original_model_is_not_modified_and_bn_stats_stay_fixed(demo_model, cohorts) -> None:
    before = copy.deepcopy(demo_model.state_dict())
    frozen = psg_unlearn(
        demo_model, cohorts.forget_train, None, PSGConfig(lr=1e-3, epochs=1, device="cpu")
    ).model
    drift = psg_unlearn(
        demo_model,
        cohorts.forget_train,
        None,
        PSGConfig(lr=1e-3, epochs=1, bn_mode="train", device="cpu"),
    ).model
    after = demo_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    stats = [k for k in before if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    assert all(torch.equal(frozen.state_dict()[k], before[k]) for k in stats)
    assert any(
        not torch.equal(drift.state_dict()[k], before[k]) for k in stats
    )  # the reference's drift


def test_unlearning_lowers_forget_accuracy(demo_model, cohorts) -> None:
    from medunlearn.evidence.metrics import accuracy_on

    # soft targets with phi 3: on 5 fixture initialisations x AVX2/AVX-512 kernels the retain
    # drop stayed <= 0.10 and forgotten-class accuracy <= 0.03 (hard targets, phi 1: drop up
    # to 0.24, so the 0.15 bound below was a coin toss on the CPU's kernels)
    cfg = PSGConfig(lr=1e-3, epochs=5, phi=3.0, forget_loss="soft", temperature=2.0, device="cpu")
    result = psg_unlearn(demo_model, cohorts.forget_train, cohorts.retain_train, cfg)
    before = accuracy_on(demo_model, cohorts.forget_test)
    after = accuracy_on(result.model, cohorts.forget_test)
    assert before > 0.5 and after < before - 0.3
    assert (
        accuracy_on(result.model, cohorts.retain_test)
        > accuracy_on(demo_model, cohorts.retain_test) - 0.15
    )
    stats = result.stats
    assert stats["n_crossed"] + stats["n_failed"] == stats["n_forget"] == len(cohorts.forget_train)


def test_failed_searches_are_skipped_or_retried(demo_model, cohorts) -> None:
    tiny = PSGConfig(eps=0.002, step_size=0.002, device="cpu")
    skipped = search_forget_set(demo_model, cohorts.forget_train, tiny, torch.device("cpu"))
    assert (~skipped.success).sum() > 0  # a tiny radius leaves many on their own label
    retried = search_forget_set(
        demo_model,
        cohorts.forget_train,
        PSGConfig(
            eps=0.002,
            step_size=0.002,
            on_failure="retry",
            retry_factor=10,
            max_retries=2,
            device="cpu",
        ),
        torch.device("cpu"),
    )
    assert retried.success.sum() > skipped.success.sum() and retried.retries > 0
    result = psg_unlearn(
        demo_model,
        cohorts.forget_train,
        None,
        PSGConfig(eps=0.002, step_size=0.002, epochs=1, device="cpu"),
    )
    assert result.stats["n_failed"] == int((~skipped.success).sum())


def test_relative_noise_follows_the_gradient_scale(demo_model, cohorts) -> None:
    x0, y = batch(cohorts, 8)
    # absolute gamma=1 swamps input gradients of ~1e-3: the step is mostly random
    absolute = boundary_search(
        demo_model,
        x0,
        y,
        PSGConfig(gamma=1.0, eps=0.05, step_size=0.05),
        torch.Generator().manual_seed(0),
    )
    relative = boundary_search(
        demo_model,
        x0,
        y,
        PSGConfig(gamma=0.1, noise_scale="relative", eps=0.05, step_size=0.05),
        torch.Generator().manual_seed(0),
    )
    clean = boundary_search(
        demo_model, x0, y, PSGConfig(eps=0.05, step_size=0.05), torch.Generator().manual_seed(0)
    )

    def agree(found) -> float:
        return float((torch.sign(found.x_adv - x0) == torch.sign(clean.x_adv - x0)).float().mean())

    assert agree(relative) > 0.9 > 0.7 > agree(absolute)


@pytest.mark.parametrize("kind", ["normal", "laplace", "cauchy", "uniform"])
def test_noise_families(kind: str) -> None:
    z = sample_noise(
        kind, torch.Size([200_000]), torch.Generator().manual_seed(0), torch.device("cpu")
    )
    assert abs(float(z.median())) < 0.02
    if kind == "uniform":
        assert z.min() >= -1 and z.max() <= 1
    if kind == "normal":
        assert float(z.std()) == pytest.approx(1.0, abs=0.01)
    if kind == "laplace":
        assert float(z.var()) == pytest.approx(2.0, rel=0.05)
    if kind == "cauchy":
        assert float(z.abs().median()) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("loss", ["hard", "soft", "topk"])
def test_forget_losses_are_non_negative_and_zero_at_the_target(loss: str) -> None:
    torch.manual_seed(0)
    cfg = PSGConfig(forget_loss=loss, temperature=2.0, topk=2)
    teacher = torch.randn(16, 5)
    y_hat = teacher.argmax(1)
    random = forget_loss(torch.randn(16, 5), y_hat, teacher, cfg)
    assert random >= 0
    if loss == "soft":
        assert forget_loss(teacher.clone(), y_hat, teacher, cfg) == pytest.approx(0.0, abs=1e-6)
    elif loss == "topk":
        top = teacher.topk(2, dim=1).indices
        matching = torch.full_like(teacher, -1e4).scatter(1, top, teacher.gather(1, top))
        assert forget_loss(matching, y_hat, teacher, cfg) == pytest.approx(0.0, abs=1e-5)
    else:
        confident = F.one_hot(y_hat, 5).float() * 50
        assert forget_loss(confident, y_hat, teacher, cfg) == pytest.approx(0.0, abs=1e-6)


def test_excluding_the_own_label_moves_its_mass_to_the_other_classes() -> None:
    # a boundary point: f0 gives the own class (0) and class 1 equal logits, class 2 less.
    # Unmasked soft target (T = 1): e^2 / (2 e^2 + 1) on each of 0 and 1; masked: class 0 gets
    # nothing, and 1 : 2 keep their ratio e^2 : e^0, so 1 / (1 + e^-2) = 0.8808 on class 1.
    teacher = torch.tensor([[2.0, 2.0, 0.0]])
    unmasked = F.softmax(teacher, dim=1)[0]
    assert float(unmasked[0]) == pytest.approx(0.4683, abs=1e-4)
    masked = F.softmax(exclude_label(teacher, torch.tensor([0])), dim=1)[0]
    assert masked.tolist() == pytest.approx([0.0, 0.8808, 0.1192], abs=1e-4)
    assert teacher.tolist() == [[2.0, 2.0, 0.0]], "the teacher's logits are not changed"
    # top-k (k = 2) over the masked target keeps classes 1 and 2, renormalised: the same
    cfg = PSGConfig(forget_loss="topk", topk=2)
    target_logits = torch.log(torch.tensor([[1e-9, 0.8808, 0.1192]]))
    loss = forget_loss(
        target_logits, torch.tensor([1]), exclude_label(teacher, torch.tensor([0])), cfg
    )
    assert float(loss) == pytest.approx(0.0, abs=1e-4)


def test_excluding_the_own_label_retires_the_class_where_soft_targets_keep_it(
    demo_model, cohorts
) -> None:
    """Soft targets (T = 4) from boundary points keep much of their mass on the own class:
    after one epoch at lr 1e-3 the forgotten images' accuracy is still 0.42 (measured; 0.43
    with seed 1); with the own class masked it is 0.008 (one image of 118)."""
    forget = cohorts.forget_train

    def forget_accuracy(masked: bool) -> float:
        cfg = PSGConfig(
            lr=1e-3,
            epochs=1,
            forget_loss="soft",
            temperature=4.0,
            exclude_own_label=masked,
            device="cpu",
        )
        model = psg_unlearn(demo_model, forget, None, cfg).model.eval()
        with torch.no_grad():
            return float((model(forget.images).argmax(1) == forget.labels).float().mean())

    kept, masked = forget_accuracy(False), forget_accuracy(True)
    assert kept > 0.25 and masked < 0.05, (kept, masked)


def test_target_accuracy_stops_early_and_cosine_schedule_runs(demo_model, cohorts) -> None:
    stop = PSGConfig(lr=1e-3, epochs=10, target_forget_accuracy=0.5, device="cpu")
    result = psg_unlearn(demo_model, cohorts.forget_train, None, stop)
    assert result.stats["epochs_run"] < 10
    plain = psg_unlearn(
        demo_model, cohorts.forget_train, None, PSGConfig(lr=1e-3, epochs=2, device="cpu")
    )
    cosine = psg_unlearn(
        demo_model,
        cohorts.forget_train,
        None,
        PSGConfig(lr=1e-3, epochs=2, scheduler="cosine", device="cpu"),
    )
    w = "classifier.weight"
    assert not torch.equal(plain.model.state_dict()[w], cosine.model.state_dict()[w])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unlearn.scheduler"):
        PSGConfig(scheduler="step")
    with pytest.raises(ValueError, match="unlearn.noise"):
        PSGConfig(noise="poisson")
    with pytest.raises(ValueError, match="unknown unlearn setting"):
        PSGConfig.from_params({"gama": 0.1})


def test_shipped_params_are_valid() -> None:
    from pathlib import Path

    import yaml

    from medunlearn.evidence.gates import DEFAULT_BOUNDS, SHARED_DEFAULTS, resolve_bounds

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    cfg = PSGConfig.from_params(params["unlearn"])
    assert cfg.noise_scale == "relative" and cfg.bn_mode == "frozen"
    assert set(params["gates"]) == set(DEFAULT_BOUNDS) | set(SHARED_DEFAULTS)
    for reason in DEFAULT_BOUNDS:  # every bound written out, none unknown
        assert set(params["gates"][reason]) == set(DEFAULT_BOUNDS[reason])
        resolve_bounds(reason, params["gates"])
