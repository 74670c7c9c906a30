"""Membership attacks, the unlearning metrics record, and gates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medunlearn.gates import evaluate_gates
from medunlearn.metrics import UnlearnMetrics, unlearning_metrics
from medunlearn.mia import loss_threshold_attack, svc_mia_efficacy
from medunlearn.models import build_model
from medunlearn.training import TrainConfig, train_classifier


def halves(images, n: int, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(images))
    a, b = np.zeros(len(images), bool), np.zeros(len(images), bool)
    a[order[:n]], b[order[n : 2 * n]] = True, True
    return images.subset(a), images.subset(b)


def test_attack_detects_a_memorising_model(demo_splits) -> None:
    members, nonmembers = halves(demo_splits.train, 120)
    g = torch.Generator().manual_seed(0)
    members.labels = torch.randint(0, 10, (len(members),), generator=g)  # only memorisable
    nonmembers.labels = torch.randint(0, 10, (len(nonmembers),), generator=g)
    model = build_model("allcnn", 10, 1, 28, seed=0, width=0.25)
    cfg = TrainConfig(epochs=40, batch_size=32, lr=3e-3, seed=0, scheduler="none")
    memoriser = train_classifier(model, members, members, [str(i) for i in range(10)], cfg).model
    attack = loss_threshold_attack(memoriser, members, nonmembers)
    assert attack.auc > 0.9 and attack.accuracy > 0.8
    assert attack.n_members == attack.n_nonmembers == 120


def test_attack_is_near_chance_on_a_random_split(demo_model, demo_splits) -> None:
    a, b = halves(demo_splits.test, 170, seed=1)
    attack = loss_threshold_attack(demo_model, a, b)
    assert abs(attack.auc - 0.5) < 0.12 and abs(attack.accuracy - 0.5) < 0.12


def test_attack_needs_two_of_each(demo_model, demo_splits) -> None:
    one = demo_splits.test.subset(np.arange(len(demo_splits.test)) < 1)
    assert loss_threshold_attack(demo_model, one, demo_splits.test).auc is None


@pytest.fixture(scope="module")
def cohorts(demo_cohorts):
    return demo_cohorts


def test_metrics_record(demo_model, cohorts) -> None:
    m = unlearning_metrics(demo_model, cohorts)
    assert m.forget_train_acc > 0.8 and m.retain_test_acc > 0.8  # the deployed model knows '3'
    assert 0 <= m.mia_efficacy <= 1 and m.mia_loss["nonmembers"] == "forget_test"
    assert m.request_hash == cohorts.request.hash
    json.dumps(m.to_dict())  # serialisable
    untrained = unlearning_metrics(build_model("allcnn", 10, 1, 28, seed=5, width=0.25), cohorts)
    m.with_reference(untrained)
    expected = np.mean([abs(getattr(m, k) - getattr(untrained, k)) for k in m.gaps])
    assert len(m.gaps) == 4 and m.avg_gap == pytest.approx(expected)


def test_svc_efficacy_rises_when_the_forget_class_loses_confidence(demo_model, cohorts) -> None:
    import copy

    forget = cohorts.forget_train
    before = svc_mia_efficacy(demo_model, cohorts.retain_train, cohorts.test, forget)
    silenced = copy.deepcopy(demo_model)
    with torch.no_grad():  # class '3' can no longer be predicted with any confidence
        silenced.classifier.bias[3] -= 50.0
    after = svc_mia_efficacy(silenced, cohorts.retain_train, cohorts.test, forget)
    assert 0 <= before < after <= 1 and after > 0.9


def metrics(**values) -> UnlearnMetrics:
    base = dict(
        request_hash="h",
        forget_train_acc=0.0,
        forget_test_acc=0.0,
        retain_train_acc=0.9,
        retain_test_acc=0.9,
        test_acc=0.8,
        per_class_test_acc={},
        mia_loss={"auc": 0.5},
        mia_efficacy=0.5,
    )
    return UnlearnMetrics(**{**base, **values})


def test_gates_name_value_bound_and_verdict() -> None:
    before = metrics(forget_test_acc=0.9, retain_test_acc=0.92)
    ok = evaluate_gates(
        "class_retirement", metrics(forget_test_acc=0.02, retain_test_acc=0.91), before
    )
    assert ok.passed and [c.name for c in ok.checks] == ["forget_test_acc", "retain_test_drop"]
    bad = evaluate_gates(
        "class_retirement", metrics(forget_test_acc=0.2, retain_test_acc=0.85), before
    )
    assert not bad.passed
    drop = bad.to_dict()["checks"][1]
    assert drop["value"] == pytest.approx(0.07) and drop["bound"] == 0.03 and not drop["passed"]
    custom = evaluate_gates(
        "class_retirement",
        metrics(forget_test_acc=0.2, retain_test_acc=0.85),
        before,
        {"class_retirement": {"max_forget_test_acc": 0.25, "max_retain_drop": 0.1}},
    )
    assert custom.passed
    consent = evaluate_gates(
        "consent_withdrawal",
        metrics(mia_loss={"auc": 0.62}, forget_train_acc=0.95, forget_test_acc=0.9),
        before,
    )
    assert [c.passed for c in consent.checks] == [False, True, True]
