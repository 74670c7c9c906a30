"""Candidates (medunlearn/revision/candidates.py): selection, run timings, evidence caveats."""

from __future__ import annotations

import pytest

from medunlearn.revision.candidates import (
    CandidateResult,
    run_timings,
    select_candidate,
    tradeoff_csv,
)


def candidate(
    name: str,
    passed: bool,
    retain: float,
    forget: float,
    auc: float = 0.5,
    reason: str = "class_retirement",
) -> CandidateResult:
    return CandidateResult(
        name,
        "sweep",
        {},
        {"retain_test_acc": retain, "forget_train_acc": forget, "membership": {"auc": auc}},
        {"passed": passed, "checks": [], "reason": reason},
    )


def _check(name, role="required", status="pass", underpowered=False, detail=""):
    return {
        "name": name,
        "role": role,
        "status": status,
        "underpowered": underpowered,
        "detail": detail,
    }


PASSED = {"reason": "consent_withdrawal", "passed": True, "failed": [], "replacements": {}}


def test_selection_rule() -> None:
    cs = [
        candidate("a", False, 0.99, 0.0),
        candidate("b", True, 0.90, 0.02),
        candidate("c", True, 0.90, 0.01),
        candidate("d", True, 0.80, 0.0),
    ]
    assert select_candidate(cs).name == "c"  # best retain among passing; tie -> lower forget
    assert select_candidate([candidate("a", False, 0.99, 0.0)]) is None
    # consent: equal retention, the tie goes to the model whose forgotten images look unseen
    # (AUC 0.52), not to the one that over-forgot them (forget acc 0.0, AUC 0.30)
    consent = [
        candidate("over", True, 0.90, 0.0, auc=0.30, reason="consent_withdrawal"),
        candidate("unseen", True, 0.90, 0.6, auc=0.52, reason="consent_withdrawal"),
        candidate("kept", True, 0.90, 1.0, auc=0.60, reason="consent_withdrawal"),
    ]
    assert select_candidate(consent).name == "unseen"
    with pytest.raises(ValueError, match="select_by"):
        select_candidate(cs, "forget_test_acc")
    csv_text = tradeoff_csv(cs, "c").splitlines()
    assert csv_text[0].startswith("candidate,kind,forget_train_acc") and len(csv_text) == 5
    assert csv_text[3].endswith("True,True")


def test_run_timings_subtract_task_compute_and_ignore_cached_runs() -> None:
    laps = {"load": 1.0, "validate": 2.0, "unlearn": 12.0, "compose": 3.0, "evaluate": 4.0}
    runs = [  # two overlapping fresh runs (100-108, 102-110) and one restored from the cache
        {"finished_at": 108.0, "seconds": 8.0},
        {"finished_at": 110.0, "seconds": 8.0},
        {"finished_at": 50.0, "seconds": 9.0},
    ]
    t = run_timings(laps, runs, [{"seconds": 1.5}, {"seconds": 0.5}], 3.0, flow_started_at=99.0)
    assert t["compute_seconds"] == {"unlearn": 10.0, "compose": 2.0, "evaluate": 3.0}
    assert t["flow_seconds"] == 22.0 and t["overhead_seconds"] == 7.0
    assert t["cached_runs"] == 1 and t["step_seconds"] == laps
    cached = run_timings(laps, runs[2:], [], 3.0, flow_started_at=99.0)
    assert cached["compute_seconds"]["unlearn"] == 0.0 and cached["overhead_seconds"] == 19.0


@pytest.mark.parametrize(
    ("gates", "baseline", "expected"),
    [
        pytest.param(  # a real change, enough members: nothing to add
            {**PASSED, "checks": [_check("membership"), _check("retain_drop")]},
            {"passed": False},
            [],
            id="discriminating",
        ),
        pytest.param(
            {**PASSED, "checks": [_check("membership")]},
            {"passed": True},
            ["not discriminating: the deployed model passes the consent_withdrawal profile too"],
            id="deployed-passes",
        ),
        pytest.param(
            {
                **PASSED,
                "checks": [
                    _check(
                        "membership",
                        underpowered=True,
                        detail="AUC 0.52; underpowered: 8 forgotten group(s) < 10",
                    )
                ],
            },
            None,
            ["underpowered: membership: 8 forgotten group(s) < 10"],
            id="underpowered-required",
        ),
        pytest.param(  # an informative check's power decides nothing
            {
                **PASSED,
                "checks": [
                    _check(
                        "membership",
                        role="informative",
                        underpowered=True,
                        detail="underpowered: 8 forgotten group(s) < 10",
                    )
                ],
            },
            {"passed": False},
            [],
            id="underpowered-informative",
        ),
        pytest.param(  # an n/a required check is replaced: the stand-in's power counts
            {
                **PASSED,
                "replacements": {"forget_heldout_acc": "forget_train_acc"},
                "checks": [
                    _check("forget_heldout_acc", status="not_applicable"),
                    _check(
                        "forget_train_acc",
                        role="informative",
                        underpowered=True,
                        detail="no per-image outcomes to pair: the bound alone decides",
                    ),
                ],
            },
            {"passed": False},
            [
                "underpowered: forget_train_acc: no per-image outcomes to pair: the bound alone "
                "decides"
            ],
            id="replacement",
        ),
        pytest.param(  # a failed gate is not a pass: no caveats to state
            {
                **PASSED,
                "passed": False,
                "failed": ["membership"],
                "checks": [
                    _check(
                        "membership", status="fail", underpowered=True, detail="underpowered: x"
                    ),
                ],
            },
            {"passed": True},
            [],
            id="failed",
        ),
    ],
)
def test_evidence_caveats(gates, baseline, expected) -> None:
    from medunlearn.revision.candidates import evidence_caveats

    assert evidence_caveats(gates, baseline) == expected
