"""Evaluation gates: the checks a revision must pass before it may be exported.

Each request ``reason`` has a profile; every bound comes from ``params.yaml`` (``gates``).
A gate result names each check, its value, its bound and whether it passed, so a failed
revision says exactly why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from medunlearn.metrics import UnlearnMetrics

DEFAULT_BOUNDS: dict[str, dict[str, float]] = {
    "class_retirement": {"max_forget_test_acc": 0.05, "max_retain_drop": 0.03},
    "device_deprecation": {"max_forget_test_acc": 0.5, "max_retain_drop": 0.03},
    "outlier_removal": {"max_forget_test_acc": 0.5, "max_retain_drop": 0.03},
    "consent_withdrawal": {"mia_auc_margin": 0.05, "max_member_gap": 0.05, "max_retain_drop": 0.03},
}


@dataclass
class Check:
    name: str
    value: float | None
    bound: float
    rule: str  # human-readable, e.g. "<= 0.05"
    passed: bool


@dataclass
class GateResult:
    reason: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
        }


def _at_most(name: str, value: float | None, bound: float) -> Check:
    return Check(name, value, bound, f"<= {bound}", value is not None and value <= bound)


def evaluate_gates(
    reason: str,
    after: UnlearnMetrics,
    before: UnlearnMetrics,
    bounds: dict[str, dict[str, float]] | None = None,
) -> GateResult:
    """Check ``after`` (the candidate) against its profile; ``before`` is the deployed model.

    Retain drop is ``before.retain_test_acc - after.retain_test_acc`` (a gain counts as 0).
    """
    if reason not in DEFAULT_BOUNDS:
        raise ValueError(f"no gate profile for reason '{reason}'")
    b = {**DEFAULT_BOUNDS[reason], **((bounds or {}).get(reason, {}))}
    result = GateResult(reason)
    drop = None
    if after.retain_test_acc is not None and before.retain_test_acc is not None:
        drop = max(0.0, before.retain_test_acc - after.retain_test_acc)
    if reason == "consent_withdrawal":
        auc = after.mia_loss.get("auc")
        result.checks.append(
            Check(
                "mia_auc_distance_from_0.5",
                None if auc is None else abs(auc - 0.5),
                b["mia_auc_margin"],
                f"|auc - 0.5| <= {b['mia_auc_margin']}",
                auc is not None and abs(auc - 0.5) <= b["mia_auc_margin"],
            )
        )
        gap = None
        if after.forget_train_acc is not None and after.forget_test_acc is not None:
            gap = abs(after.forget_train_acc - after.forget_test_acc)
        result.checks.append(_at_most("member_accuracy_gap", gap, b["max_member_gap"]))
    else:
        result.checks.append(
            _at_most("forget_test_acc", after.forget_test_acc, b["max_forget_test_acc"])
        )
    result.checks.append(_at_most("retain_test_drop", drop, b["max_retain_drop"]))
    return result
