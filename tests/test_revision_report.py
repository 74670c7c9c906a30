"""``medunlearn.revision.report`` without a browser: the split of the run's metrics into the
DVC headline and the details file, the report's inputs from a revision folder, escaping
(issue 28). The page in a real browser: ``test_report_html.py``.
"""

from __future__ import annotations

import json

import pytest

from medunlearn.revision.card import card_json
from medunlearn.revision.report import (
    HEADLINE_LEAVES,
    headline_metrics,
    leaves,
    metrics_details,
    render_report,
    report_inputs,
)
from tasks.write_revision_report import details_path

# what the README documents for `dvc metrics show` (written out, not imported)
DOCUMENTED = {
    "passed",
    "selected",
    "revision_id",
    "request",
    "reason",
    *(
        f"{who}.{k}"
        for who in ("candidate", "deployed")
        for k in (
            "forget_train_acc",
            "forget_heldout_acc",
            "retain_test_acc",
            "test_acc",
            "membership_auc",
        )
    ),
}


def unlearn_metrics(base: float, avg_gap: float | None = None) -> dict:
    """An ``UnlearnMetrics.to_dict()``-shaped dict with distinct known values."""
    return {
        "forget_train_acc": base,
        "forget_heldout_acc": base + 0.01,
        "forget_test_acc": None,
        "retain_train_acc": base + 0.02,
        "retain_test_acc": base + 0.03,
        "retain_test_balanced_acc": base + 0.04,
        "test_acc": base + 0.05,
        "avg_gap": avg_gap,
        "gaps": {},
        "membership": {
            "auc": base + 0.06,
            "auc_low": 0.3,
            "auc_high": 0.7,
            "null": {"low": 0.4, "median": 0.5, "high": 0.6},
            "matching": {"columns": ["label"], "n": 10},
        },
    }


def full_metrics(selected: bool = True, avg_gap: float | None = None) -> dict:
    """The metrics ``write_revision_report`` assembles before the split (its keys)."""
    return {
        "request": "647373cd9d5c3695",
        "reason": "consent_withdrawal",
        "passed": selected,
        "selected": "scrub" if selected else None,
        "revision_id": "rev-5f4a2af7c8dd" if selected else None,
        "deployed": unlearn_metrics(0.9),
        "deployed_gates": {"passed": True, "checks": [{"name": "membership", "value": 0.37}]},
        "selected_metrics": unlearn_metrics(0.1, avg_gap) if selected else None,
        "gates": {"passed": True, "checks": [{"name": "membership", "value": 0.36}]},
        "parity": {"passed": True, "max_abs_diff": 1.9e-06},
        "counts": {"forget_train": 8, "retain_train": 1142},
        "caveats": ["not discriminating: ..."],
        "failed_runs": [],
        "step_seconds": {"load": 1.0, "unlearn": 20.0},
        "compute_seconds": {"unlearn": 18.0},
        "overhead_seconds": 3.0,
        "flow_seconds": 21.0,
        "cached_runs": 0,
    }


def test_the_headline_holds_the_documented_figures_only() -> None:
    full = full_metrics()
    headline = headline_metrics(full)
    assert set(leaves(headline)) == set(HEADLINE_LEAVES) == DOCUMENTED
    assert len(leaves(headline)) == 15 < len(leaves(full)) // 3
    assert headline["candidate"] == {
        "forget_train_acc": 0.1,
        "forget_heldout_acc": pytest.approx(0.11),
        "retain_test_acc": pytest.approx(0.13),
        "test_acc": pytest.approx(0.15),
        "membership_auc": pytest.approx(0.16),
    }
    assert headline["deployed"]["membership_auc"] == pytest.approx(0.96)
    assert (headline["passed"], headline["selected"], headline["request"]) == (
        True,
        "scrub",
        "647373cd9d5c3695",
    )


def test_avg_gap_is_a_headline_figure_only_when_measured() -> None:
    headline = headline_metrics(full_metrics(avg_gap=2.5))
    assert set(leaves(headline)) == DOCUMENTED | {"candidate.avg_gap"}
    assert headline["candidate"]["avg_gap"] == 2.5


def test_a_refused_run_keeps_the_same_headline_keys() -> None:
    headline = headline_metrics(full_metrics(selected=False))
    assert set(leaves(headline)) == DOCUMENTED  # stable columns for `dvc metrics diff`
    assert headline["passed"] is False and set(headline["candidate"].values()) == {None}


def test_the_details_carry_everything_else() -> None:
    full = full_metrics()
    headline, details = headline_metrics(full), metrics_details(full)
    assert set(details) == set(full) - {"passed", "selected", "revision_id", "reason"}
    kept = {**leaves(headline), **leaves(details)}
    for path, value in leaves(full).items():  # every figure of the run is in one of them
        assert path in kept and kept[path] == value, path
    assert json.loads(json.dumps(details)) == details


def test_details_path_defaults_beside_the_headline() -> None:
    assert details_path({"metrics": "reports/metrics.json"}) == "reports/metrics_details.json"
    assert details_path({"metrics": "m.json", "details": "d/x.json"}) == "d/x.json"


def test_report_inputs_follow_the_record_params(tmp_path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "ham-validation.json").write_text('{"outcomes": []}')
    (tmp_path / "reports" / "tradeoff.png").write_bytes(b"\x89PNG-bytes")
    record = {"params": {"maintain": {"reports": {"validation": "r/ham-validation.json"}}}}
    assert report_inputs(tmp_path, record) == ({"outcomes": []}, b"\x89PNG-bytes")
    assert report_inputs(tmp_path / "absent", {}) == (None, None)


def test_every_text_is_escaped() -> None:
    record = {
        "model": "m<script>alert(1)</script>",
        "version": "v1.0.0",
        "requests": [{"id": "h", "reason": "outlier_removal", "selector": {"site": "<b>"}}],
        "request_hash": "h",
        "gates": {
            "passed": False,
            "checks": [{"name": 'x"><img src=y>', "role": "required", "status": "fail"}],
        },
    }
    page = render_report(card_json(record), {"outcomes": [{"detail": "<i>&"}]}, None)
    assert "<script>" not in page and "<img src=y>" not in page and "<i>" not in page
    assert "m&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;i&gt;&amp;" in page
    assert 'id="plot-missing"' in page  # no plot: said, not a broken image
