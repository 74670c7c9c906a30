"""Drift statistics (medunlearn/data/drift.py): hand-computed values, calibration under no drift
on real data, detection of a device swapped in, and the finding -> request rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medunlearn.data.drift import (
    DriftError,
    DriftReport,
    category_tests,
    compare_batches,
    decode_all,
    embeddings,
    heldout_rows,
    intensity_tests,
    mmd_test,
    newest_manifest,
    read_batch,
    request_from_finding,
    training_rows,
    untested_metadata,
)
from medunlearn.data.images import ImageSpec
from medunlearn.data.request import ForgetRequest
from medunlearn.models import build_model

SPEC = ImageSpec(size=32, channels=3)


def naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Second implementation: loops over pairs, median heuristic from the pooled distances."""
    pooled = [*x, *y]
    dists = [float(np.linalg.norm(a - b)) for i, a in enumerate(pooled) for b in pooled[i + 1 :]]
    s = float(np.median(np.square(dists))) ** 0.5

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * s * s))

    kxx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
    kyy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
    kxy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return kxx + kyy - 2 * kxy


def test_mmd_statistic_matches_a_second_implementation() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    result = mmd_test(x, y, permutations=50)
    assert result.statistic == pytest.approx(naive_mmd2(x, y), rel=1e-9)
    assert (result.n_reference, result.n_batch) == (7, 5)


def test_mmd_one_dimensional_hand_value() -> None:
    # x = {0, 1}, y = {3, 4}: squared distances 1, 9, 16, 4, 9, 1 -> median 6.5, 2s^2 = 13
    result = mmd_test(np.array([[0.0], [1.0]]), np.array([[3.0], [4.0]]), permutations=10)
    e = math.exp
    kxx = (2 + 2 * e(-1 / 13)) / 4
    kxy = (e(-9 / 13) + e(-16 / 13) + e(-4 / 13) + e(-9 / 13)) / 4
    assert result.statistic == pytest.approx(2 * kxx - 2 * kxy, rel=1e-12)


def test_mmd_p_values_separate_same_from_shifted() -> None:
    rng = np.random.default_rng(0)
    same = [
        mmd_test(rng.normal(size=(60, 4)), rng.normal(size=(60, 4)), 200, s).p_value
        for s in range(10)
    ]
    assert sum(p > 0.05 for p in same) >= 8  # a valid test: about 5% below 0.05
    shifted = mmd_test(rng.normal(size=(60, 4)), rng.normal(0.8, 1, size=(60, 4)), 200)
    assert shifted.p_value < 0.01 and shifted.drifted


def test_mmd_permutation_p_value_is_seeded() -> None:
    """Same seed, same p-value (a report can be re-derived); another seed draws other
    permutations, so the p-value moves by a permutation's worth, not more."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 3)), rng.normal(0.15, 1, size=(40, 3))
    first, again = mmd_test(a, b, 100, seed=7), mmd_test(a, b, 100, seed=7)
    assert (first.p_value, first.statistic) == (again.p_value, again.statistic)
    others = {mmd_test(a, b, 100, seed=s).p_value for s in range(8)}
    assert len(others) > 1  # the seed reaches the permutations
    assert max(others) - min(others) < 0.25


def test_mmd_refuses_a_one_image_side() -> None:
    with pytest.raises(DriftError, match="at least 2"):
        mmd_test(np.zeros((1, 2)), np.zeros((3, 2)))


def two_sided_fisher(a: int, b: int, c: int, d: int) -> float:
    """Hand-rolled Fisher exact test: hypergeometric probabilities no larger than the
    observed table's, summed over the tables with the same margins."""
    n, row1, col1 = a + b + c + d, a + b, a + c

    def prob(x: int) -> float:
        return math.comb(col1, x) * math.comb(n - col1, row1 - x) / math.comb(n, row1)

    observed = prob(a)
    lo, hi = max(0, row1 + col1 - n), min(row1, col1)
    return sum(prob(x) for x in range(lo, hi + 1) if prob(x) <= observed * (1 + 1e-7))


def test_vanished_device_needs_evidence() -> None:
    reference = pd.Series(["a"] * 90 + ["b"] * 10)
    small = category_tests(reference, pd.Series(["a"] * 5), "device")
    vanished = next(t for t in small if t.kind == "vanished")
    assert vanished.value == "b"
    assert vanished.p_value == pytest.approx(two_sided_fisher(10, 90, 0, 5))
    assert not vanished.drifted  # 5 images: a 10% device is often absent by chance
    large = category_tests(reference, pd.Series(["a"] * 200), "device")
    vanished = next(t for t in large if t.kind == "vanished")
    assert vanished.p_value == pytest.approx(two_sided_fisher(10, 90, 0, 200))
    assert vanished.drifted and vanished.p_value < 1e-4


def test_new_value_and_frequency_table() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    batch = pd.Series(["a"] * 20 + ["b"] * 20 + ["c"] * 20)
    tests = {(t.kind, t.value): t for t in category_tests(reference, batch, "site")}
    assert tests[("new", "c")].drifted
    freq = tests[("frequency", None)]
    # chi-square by hand: expected = row total x column share of 160
    table = np.array([[50, 50, 0], [20, 20, 20]])
    expected = table.sum(1, keepdims=True) * table.sum(0) / table.sum()
    assert freq.statistic == pytest.approx(((table - expected) ** 2 / expected).sum())
    assert freq.detail["dof"] == 2


def test_intensity_ks_hand_value() -> None:
    # per-image means 0.1, 0.2, 0.3 vs 0.25, 0.35: largest ECDF gap 2/3 at 0.2 -> 0.3... D = 2/3
    ref = torch.tensor([0.1, 0.2, 0.3]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2)
    new = torch.tensor([0.25, 0.35]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2)
    mean, std = intensity_tests(ref, new)
    assert mean.statistic == pytest.approx(2 / 3)
    assert std.statistic == 0.0  # constant images: every std is 0


def test_finding_becomes_a_request_only_for_a_vanished_device() -> None:
    rules = {"on_device_drift": "deprecate_device", "on_embedding_drift": "notify_only"}
    vanished = {
        "attribute": "device",
        "kind": "vanished",
        "value": "scanner_c",
        "p_value": 1e-5,
        "n_batch": 200,
        "batch": "incoming/b.csv",
    }
    request, _ = request_from_finding(vanished, rules)
    assert request["reason"] == "device_deprecation"
    assert request["selector"] == {"devices": ["scanner_c"]}
    for payload in (
        {**vanished, "kind": "new"},
        {"attribute": "embedding", "kind": "embedding", "value": None},
        {"attribute": "site", "kind": "vanished", "value": "site_south"},
    ):
        assert request_from_finding(payload, rules)[0] is None
    notify = {**rules, "on_device_drift": "notify_only"}
    assert request_from_finding(vanished, notify)[0] is None
    with pytest.raises(DriftError, match="on_device_drift"):
        request_from_finding(vanished, {"on_device_drift": "retrain"})
    with pytest.raises(DriftError, match="lacks"):
        request_from_finding({"value": "x"}, rules)
    with pytest.raises(DriftError, match="schema 'other/2'"):
        request_from_finding({**vanished, "schema": "other/2"}, rules)


def test_newest_manifest_and_batch_errors(tmp_path: Path) -> None:
    with pytest.raises(DriftError, match="holds no \\*.csv"):
        newest_manifest(tmp_path)
    old, new = tmp_path / "a.csv", tmp_path / "b.csv"
    old.write_text("image_id,path\n")
    new.write_text("image_id,path\nx,missing.png\n")
    import os

    os.utime(old, (2e9, 2e9))  # newer mtime wins over the name
    assert newest_manifest(tmp_path) == old
    with pytest.raises(DriftError, match="no rows"):
        read_batch(old, SPEC)
    with pytest.raises(Exception, match="row 1 \\(image_id=x\\), column 'path'"):
        read_batch(new, SPEC)


# --- real data: the HAM10000 subset -----------------------------------------------------


def fit_briefly(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """A few seeded epochs of Adam on (N, C, H, W) images: the real-data drift tests embed
    with a trained model's ``features()``, as the drift watch does with production's. The
    training loss must fall (the model learned something)."""
    torch.manual_seed(0)
    order = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(3):
        total = 0.0
        for idx in torch.randperm(len(images), generator=order).split(64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
            loss.backward()
            optimiser.step()
            total += float(loss) * len(idx)
        losses.append(total / len(images))
    assert losses[-1] < losses[0], losses
    return model.eval()


@pytest.fixture(scope="module")
def ham(shared_data):
    root = shared_data / "ham10000_sites"
    frame = pd.read_csv(root / "manifest.csv", dtype=str)
    images = decode_all([root / p for p in frame["path"]], SPEC)
    labels = torch.as_tensor(pd.factorize(frame["label"])[0])
    model = fit_briefly(build_model("allcnn", 7, 3, 32, seed=0, width=0.25), images, labels)
    return frame.reset_index(drop=True), images, model


@pytest.mark.slow
def test_no_drift_between_random_halves_of_one_split(shared_data) -> None:
    """PneumoniaMNIST train split (2,428 images; features of a model trained on it):
    embedding MMD and intensity KS; HAM10000 device frequencies. Each p > 0.05 in at least
    9 of 10 seeded halvings."""
    data = np.load(shared_data / "medmnist" / "pneumoniamnist_subset.npz")
    images = torch.from_numpy(data["train_images"]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(data["train_labels"]).long().view(-1)
    model = fit_briefly(build_model("allcnn", 2, 1, 28, seed=0, width=0.25), images, labels)
    features = embeddings(model, images)
    devices = pd.read_csv(shared_data / "ham10000_sites" / "manifest.csv", dtype=str)["device"]
    quiet = {"embedding": 0, "intensity_mean": 0, "intensity_std": 0, "frequency": 0}
    for seed in range(10):
        order = np.random.default_rng(seed).permutation(len(images))
        a, b = order[: len(order) // 2], order[len(order) // 2 :]
        tests = [
            mmd_test(features[a], features[b], 200, seed),
            *intensity_tests(images[a], images[b]),
        ]
        order = np.random.default_rng(seed).permutation(len(devices))
        half = len(order) // 2
        tests += category_tests(devices.iloc[order[:half]], devices.iloc[order[half:]], "device")
        for t in tests:
            if t.kind in quiet and t.p_value > 0.05:
                quiet[t.kind] += 1
    assert all(count >= 9 for count in quiet.values()), quiet


def test_device_swapped_in_is_detected_and_named(ham) -> None:
    frame, images, model = ham
    held_out = "vienna_dias"
    is_out = (frame["device"] == held_out).to_numpy()
    rest = np.flatnonzero(~is_out)
    order = np.random.default_rng(0).permutation(rest)
    reference = order[: len(order) // 2]
    batch = np.concatenate([order[len(order) // 2 :][:60], np.flatnonzero(is_out)[:60]])
    tests = compare_batches(
        frame.iloc[reference],
        images[reference],
        frame.iloc[batch],
        images[batch],
        model,
        permutations=200,
    )
    by_kind = {(t.kind, t.value): t for t in tests}
    assert by_kind[("embedding", None)].p_value < 0.01
    new = by_kind[("new", held_out)]
    assert new.drifted and new.detail["batch_count"] == 60
    report = DriftReport(tests, "incoming/b.csv", "classifier", "v1.0.0")
    devices = [p for p in report.payloads() if p["attribute"] == "device" and p["kind"] == "new"]
    assert [p["value"] for p in devices] == [held_out]
    assert devices[0]["n_batch"] == len(batch) and devices[0]["p_value"] < 0.01


def test_identical_embeddings_are_not_drift() -> None:
    # every pairwise distance 0: rounding noise must not beat the permutations
    result = mmd_test(np.zeros((30, 8)), np.zeros((30, 8)), permutations=200)
    assert result.p_value == 1.0 and not result.drifted
    # half the pairs identical: the bandwidth comes from the distances that are not 0
    x = np.concatenate([np.zeros((20, 1)), np.ones((2, 1))])
    assert mmd_test(x, x.copy(), 50).detail["bandwidth"] == pytest.approx(1.0)


def test_metadata_values_are_compared_trimmed_and_gaps_are_said() -> None:
    tests = category_tests(
        pd.Series(["a"] * 50 + ["b"] * 50), pd.Series(["a "] * 5 + ["b"] * 5), "device"
    )
    assert [t.kind for t in tests] == ["frequency"]  # "a " is "a": nothing new or vanished
    notes = untested_metadata(pd.DataFrame({"device": ["a"]}), pd.DataFrame({"device": [None]}))
    assert notes == [
        "device: empty in the batch manifest",
        "site: no such column in the training manifest",
        "site: no such column in the batch manifest",
    ]


def test_reference_rows_leave_out_what_was_forgotten() -> None:
    manifest = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(8)],
            "label": list("ababaabb"),
            "split": ["train"] * 4 + ["val", "val", "test", "test"],
            "device": ["d1", "d2", "d1", "d2", "d1", "d2", "d1", "d2"],
        }
    )
    gone = [ForgetRequest("device_deprecation", {"devices": ["d2"]})]
    assert list(training_rows(manifest, gone)["image_id"]) == ["i0", "i2"]
    assert list(heldout_rows(manifest, gone)["image_id"]) == ["i4", "i6"]
    assert list(heldout_rows(manifest, [])["image_id"]) == ["i4", "i5", "i6", "i7"]
