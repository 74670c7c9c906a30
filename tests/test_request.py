"""Forget requests and cohorts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medunlearn.data.request import ForgetRequest, RequestError, build_cohorts, cohort_masks


def test_class_request_cohorts(demo_splits) -> None:
    d = demo_splits
    request = ForgetRequest("class_retirement", {"labels": ["3"]})
    c = build_cohorts(d.manifest, d.train, d.val, d.test, d.info.class_names, request)
    assert (c.forget_train.labels == 3).all() and (c.retain_train.labels != 3).all()
    assert (c.forget_test.labels == 3).all() and (c.retain_test.labels != 3).all()
    assert len(c.forget_train) + len(c.retain_train) == len(d.train)
    assert len(c.forget_test) + len(c.retain_test) == len(d.test)
    assert c.masks.request_hash == request.hash and c.masks.counts["forget_train"] == len(
        c.forget_train
    )


def test_device_and_query_selectors_combine(demo_splits) -> None:
    m = demo_splits.manifest
    masks = cohort_masks(
        m,
        ForgetRequest(
            "device_deprecation", {"devices": ["scanner_c"], "query": "label in ['1', '7']"}
        ),
    )
    rows = m[masks.forget_train]
    assert set(rows["device"]) == {"scanner_c"} and set(rows["label"]) == {"1", "7"}
    assert set(m[masks.forget_test]["split"]) == {"test"}


def test_consent_fraction_samples_whole_patients(demo_splits) -> None:
    m = demo_splits.manifest
    request = ForgetRequest(
        "consent_withdrawal", {"query": "split == 'train'"}, fraction=0.1, seed=4
    )
    masks = cohort_masks(m, request)
    forgotten = set(m.loc[masks.forget_train, "patient_id"])
    train_patients = set(m.loc[m["split"] == "train", "patient_id"])
    assert len(forgotten) == round(0.1 * len(train_patients))
    # every image of a forgotten patient is forgotten: nobody is half-forgotten
    assert not (m["patient_id"].isin(forgotten) & masks.retain_train).any()
    again = cohort_masks(
        m, ForgetRequest("consent_withdrawal", {"query": "split == 'train'"}, fraction=0.1, seed=4)
    )
    assert np.array_equal(again.forget_train, masks.forget_train)


def test_request_file_hash_and_errors(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("reason: device_deprecation\nselector:\n  devices: [scanner_b]\n")
    a = ForgetRequest.load(path)
    (tmp_path / "r.json").write_text(
        json.dumps({"selector": {"devices": ["scanner_b"]}, "reason": "device_deprecation"})
    )
    assert ForgetRequest.load(tmp_path / "r.json").hash == a.hash
    assert ForgetRequest("device_deprecation", {"devices": ["scanner_a"]}).hash != a.hash
    with pytest.raises(RequestError, match="reason 'forget_everything'"):
        ForgetRequest("forget_everything", {"labels": ["1"]})
    with pytest.raises(RequestError, match="selector needs"):
        ForgetRequest("class_retirement", {"colour": ["red"]})
    with pytest.raises(RequestError, match="fraction"):
        ForgetRequest("consent_withdrawal", {"labels": ["1"]}, fraction=1.5)
    # issue 27: "fraction: half" reported a comparison between int and str
    with pytest.raises(RequestError, match=r"fraction must be a number in \(0, 1\], got 'half'"):
        ForgetRequest("consent_withdrawal", {"labels": ["1"]}, fraction="half")
    with pytest.raises(RequestError, match="seed must be an integer, got 'x'"):
        ForgetRequest("consent_withdrawal", {"labels": ["1"]}, seed="x")
    # a misspelt top-level key would otherwise be dropped and forget less than was asked
    typo = tmp_path / "typo.yaml"
    typo.write_text("reason: consent_withdrawal\nselector:\n  patient_ids: [P1]\npatients: [P2]\n")
    with pytest.raises(RequestError, match=r"typo.yaml: unknown key\(s\) \['patients'\]"):
        ForgetRequest.load(typo)


def test_request_selecting_nothing_is_refused(demo_splits) -> None:
    with pytest.raises(RequestError, match="selects no training rows"):
        cohort_masks(demo_splits.manifest, ForgetRequest("class_retirement", {"labels": ["42"]}))


def _tiny_manifest():
    import pandas as pd

    rows = [  # (label, split): a, b and c each have 2 training rows
        ("a", "train"),
        ("a", "train"),
        ("b", "train"),
        ("b", "train"),
        ("c", "train"),
        ("c", "train"),
        ("a", "test"),
        ("b", "test"),
        ("c", "test"),
    ]
    return pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(len(rows))],
            "label": [r[0] for r in rows],
            "split": [r[1] for r in rows],
            "device": ["d1", "d2", "d1", "d1", "d1", "d2", "d1", "d1", "d1"],
            "patient_id": [f"p{k}" for k in range(len(rows))],
        }
    )


@pytest.mark.parametrize(
    ("request_", "retired"),
    [
        (ForgetRequest("class_retirement", {"labels": ["b"]}), ["b"]),
        (ForgetRequest("class_retirement", {"labels": ["a", "c"]}), ["a", "c"]),
        # half of b's patients: b is still taught, nothing retired
        (ForgetRequest("class_retirement", {"labels": ["b"]}, fraction=0.5), []),
        # a device request removes all of b's training rows (both on d1) but retires nothing
        (ForgetRequest("device_deprecation", {"devices": ["d1"], "labels": ["b"]}), []),
        # a retirement of "a" on one device leaves a's d2 row: a is not retired
        (ForgetRequest("class_retirement", {"labels": ["a"], "devices": ["d1"]}), []),
        (
            ForgetRequest(
                "consent_withdrawal",
                {"patient_ids": ["p0"]},
                carried=(ForgetRequest("class_retirement", {"labels": ["c"]}),),
                inherited=(ForgetRequest("class_retirement", {"labels": ["b"]}),),
            ),
            ["b", "c"],
        ),
    ],
)
def test_retired_classes(request_, retired) -> None:
    from medunlearn.data.request import retired_classes

    assert retired_classes(_tiny_manifest(), request_) == retired


@pytest.mark.parametrize(
    ("selector", "message"),
    [  # issue 27 review: each was a traceback of 70-400 lines
        ({"query": "label ==="}, r"selector 'query': bad row query 'label ===': SyntaxError"),
        ({"query": "nosuchcol == 1"}, r"selector 'query': bad row query .*nosuchcol"),
        ({"labels": 3}, r"selector 'labels' must be a non-empty list .* got int"),
        ({"devices": "scanner_a"}, r"selector 'devices' must be a non-empty list .* got str"),
        ({"patient_ids": []}, r"selector 'patient_ids' must be a non-empty list"),
    ],
)
def test_a_bad_selector_is_refused_by_name(demo_splits, selector, message) -> None:
    with pytest.raises(RequestError, match=message):
        cohort_masks(demo_splits.manifest, ForgetRequest("device_deprecation", selector))


def test_an_earlier_requests_refusal_says_it_is_the_earlier_one(demo_splits) -> None:
    """A carried request that selects nothing here (e.g. another dataset's) is named as the
    earlier request, not mistaken for the new one."""
    earlier = ForgetRequest("class_retirement", {"labels": ["no-such-class"]})
    request = ForgetRequest("class_retirement", {"labels": ["3"]}, carried=(earlier,))
    with pytest.raises(RequestError, match=r"an earlier request this revision keeps forgotten"):
        cohort_masks(demo_splits.manifest, request)
