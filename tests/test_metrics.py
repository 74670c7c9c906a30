"""The unlearning metrics record (medunlearn/evidence/metrics.py): UA/RA/TA, membership,
and the gaps to a reference in percentage points (Avg Gap, SalUn), by hand."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from medunlearn.evidence.metrics import unlearning_metrics


def test_metrics_record_and_avg_gap_in_points(demo_model, demo_cohorts) -> None:
    m = unlearning_metrics(demo_model, demo_cohorts)
    assert m.forget_train_acc > 0.8 and m.retain_test_acc > 0.8  # the deployed model knows '3'
    assert 0 <= m.retain_test_balanced_acc <= 1 and set(m.retain_test_recall) <= set("0124567891")
    assert m.membership["matching"]["columns"][0] == "label"  # class request: label required
    assert m.request_hash == demo_cohorts.request.hash
    json.dumps(m.to_dict())
    assert "retain_heldout_outcomes" not in m.to_dict()  # in memory only
    outcomes = m.retain_heldout_outcomes  # what the retention test pairs, row by row
    assert outcomes["correct"].mean() == pytest.approx(m.retain_heldout_acc)
    assert "3" not in {demo_cohorts.class_names[k] for k in outcomes["label"]}
    assert outcomes["rows"] != hashlib.sha256(b"").hexdigest()  # real image ids, in order
    other = copy.deepcopy(m)
    other.forget_train_acc, other.retain_train_acc = m.forget_train_acc - 0.1, m.retain_train_acc
    other.retain_test_acc, other.mia_efficacy = m.retain_test_acc - 0.02, m.mia_efficacy - 0.3
    other.membership = {**m.membership, "auc": m.membership["auc"] + 0.2}
    m.with_reference(other)
    assert m.gaps["forget_train_acc"] == pytest.approx(10.0)  # points, not fractions
    assert m.avg_gap == pytest.approx((10.0 + 0 + 2.0 + 30.0) / 4)  # SalUn: MIA-efficacy
    # the tuning signal swaps MIA-efficacy for the rank-AUC attack (20 points here)
    assert m.tuning_gaps["mia_auc"] == pytest.approx(20.0)
    assert m.tuning_gap == pytest.approx((10.0 + 0 + 2.0 + 20.0) / 4)


@pytest.mark.parametrize(
    ("forget", "retain", "test", "mia", "expected"),
    [  # each a hand-computed mean of |after - reference| in points (SalUn's Avg Gap)
        ((0.10, 0.10), (0.90, 0.90), (0.85, 0.85), (0.50, 0.50), 0.0),
        ((0.30, 0.10), (0.90, 0.80), (0.85, 0.85), (0.50, 0.70), (20 + 10 + 0 + 20) / 4),
        ((0.00, 0.05), (0.95, 0.90), (0.80, 0.85), (0.90, 0.50), (5 + 5 + 5 + 40) / 4),
    ],
)
def test_avg_gap_table(demo_model, demo_cohorts, forget, retain, test, mia, expected) -> None:
    """Avg Gap over the four SalUn columns (UA via forget-train accuracy, RA, TA, MIA
    efficacy), in percentage points, for a table of hand-computed cases."""
    m = unlearning_metrics(demo_model, demo_cohorts)
    after, reference = copy.deepcopy(m), copy.deepcopy(m)
    for obj, k in ((after, 0), (reference, 1)):
        obj.forget_train_acc, obj.retain_train_acc = forget[k], retain[k]
        obj.retain_test_acc, obj.mia_efficacy = test[k], mia[k]
    after.with_reference(reference)
    assert after.avg_gap == pytest.approx(expected)
