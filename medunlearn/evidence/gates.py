"""Evaluation gates: the checks a revision must pass before it may be exported.

Each request ``reason`` has a **profile**: which checks are *required* (all must pass),
which are *informative* (reported, never blocking), and what replaces a check that cannot
apply. Bounds come from ``params.yaml`` (``gates``). Every check ends in one of three
states: ``pass``, ``fail`` or ``not_applicable`` (with the reason); a required check that is
not applicable is replaced by the check its profile names, and with no replacement the gate
is *undecided* and does not pass. Nothing is silently passed or failed.

The profiles follow from what forgetting means for each reason:

- ``class_retirement``: the class must no longer be predicted. Required: accuracy on the
  forgotten training images and on held-out images of the class at most ``max_forget_acc``
  (no held-out images of the class: replaced by the training images alone), retention.
- ``device_deprecation``, ``outlier_removal``, ``consent_withdrawal``: the forgotten
  training images must look to the model like held-out images of the same kind, i.e. like
  non-members. Required: the **membership test** (rank attack against matched held-out rows,
  ``medunlearn.evidence.membership``) and the **member accuracy gap**, plus retention. An outlier or a
  patient has no held-out twin, so these compare with rows matched on label, device and
  site. A bound on held-out accuracy alone is no evidence (on HAM10000 the untouched model
  already met one on a deprecated device's held-out images) and is not used.

Decision rule of the two membership checks (same for every cohort size): a check fails only
when the evidence is both *significant* (one-sided p-value below ``alpha``) and *material*
(AUC above 0.5 by more than ``mia_auc_margin``; accuracy gap above ``max_member_gap``). A
retrain reference, whose forgotten images are true non-members, therefore fails with
probability at most ``alpha``; the untouched deployed model fails whenever it measurably
memorised the cohort. Below ``min_members`` forgotten images the check is marked
*underpowered*: it can flag only extreme memorisation (one image: its loss must fall below
nearly every matched held-out image), and when the smallest reachable p-value is not below
``alpha`` the check states that it cannot detect anything at this size.

Retention is measured on the retained held-out rows (val and test) with the deployed model
as the baseline, with the same *significant and material* rule: accuracy (balanced accuracy)
fails only when it dropped by more than ``max_retain_drop`` (``max_balanced_drop``) **and**
the drop is significant at ``alpha`` in a paired one-sided test on the same rows. A bound
alone refused true retrains: on the HAM10000 device scenario (216 retained held-out images,
one image = 0.46 points, seven classes) retrains of different seeds differ from the deployed
model by more than 3 points, so 2 of 4 were refused. Pairing the two models' outcomes image by image removes
the images both get right or wrong, which is most of that noise:

- accuracy: the exact McNemar test (McNemar 1947; Dietterich 1998 for comparing
  classifiers), a binomial test on the discordant images (scipy.stats.binomtest);
- balanced accuracy: a paired sign-flip permutation test on the discordant images, each
  weighted by 1 / (number of classes x its class's row count), which is exactly the change
  of balanced accuracy (scipy.stats.permutation_test, 9,999 resamples, seeded; exact when
  few images are discordant).

The bound alone decides, and the check says so and is marked *underpowered*, when the paired
test cannot reach ``alpha`` at all: with ``n`` discordant images its smallest p-value is
0.5^n (every one of them lost), so at alpha 0.01 six or fewer discordant images can never be
significant (a candidate that loses 6 of 117 images and gains none, 5.1 points, would
otherwise pass). The same holds when a caller gives metrics without per-image outcomes.
The largest per-class recall drop is reported.

Every profile also requires ``forget_not_raised``: the candidate's accuracy on the forgotten
training images is at most the deployed model's (issue 26: an outlier revision that passed
its membership checks had raised it from 0.443 to 0.486, i.e. fitted the rows it was asked
to forget). No tolerance: one more correctly classified forgotten image fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from medunlearn.errors import Refusal
from medunlearn.evidence.metrics import UnlearnMetrics

PASS, FAIL, NA = "pass", "fail", "not_applicable"
REQUIRED, INFORMATIVE = "required", "informative"

SHARED_DEFAULTS: dict[str, float] = {"alpha": 0.01, "min_members": 10}
RETENTION = {"max_retain_drop": 0.03, "max_balanced_drop": 0.03, "max_class_recall_drop": 0.10}
MEMBERSHIP = {"mia_auc_margin": 0.05, "max_member_gap": 0.05}
DEFAULT_BOUNDS: dict[str, dict[str, float]] = {
    "class_retirement": {"max_forget_acc": 0.05, **MEMBERSHIP, **RETENTION},
    "device_deprecation": {**MEMBERSHIP, **RETENTION},
    "outlier_removal": {**MEMBERSHIP, **RETENTION},
    "consent_withdrawal": {**MEMBERSHIP, **RETENTION},
}


class GateConfigError(Refusal, ValueError):
    """The ``gates`` section names an unknown reason or bound."""


@dataclass(frozen=True)
class CheckSpec:
    """One check of a profile: its name, role and replacement when not applicable."""

    name: str
    role: str
    replaced_by: str | None = None


PROFILES: dict[str, tuple[CheckSpec, ...]] = {
    "class_retirement": (
        CheckSpec("forget_train_acc", REQUIRED),
        CheckSpec("forget_heldout_acc", REQUIRED, replaced_by="forget_train_acc"),
        CheckSpec("retain_drop", REQUIRED),
        CheckSpec("retain_balanced_drop", REQUIRED),
        CheckSpec("forget_not_raised", REQUIRED),
        CheckSpec("class_recall_drop", INFORMATIVE),
        CheckSpec("membership", INFORMATIVE),
    ),
    **{
        reason: (
            CheckSpec("membership", REQUIRED),
            CheckSpec("member_accuracy_gap", REQUIRED),
            CheckSpec("retain_drop", REQUIRED),
            CheckSpec("retain_balanced_drop", REQUIRED),
            CheckSpec("forget_not_raised", REQUIRED),
            CheckSpec("class_recall_drop", INFORMATIVE),
            CheckSpec("over_forgetting", INFORMATIVE),
        )
        for reason in ("device_deprecation", "outlier_removal", "consent_withdrawal")
    },
}


@dataclass
class Check:
    """The outcome of one check (``value`` and ``bound`` in [0, 1] units unless named)."""

    name: str
    role: str
    status: str  # pass | fail | not_applicable
    value: float | None
    bound: float | None
    rule: str  # human-readable decision rule
    detail: str = ""
    underpowered: bool = False

    @property
    def passed(self) -> bool:
        """Whether the check's status is ``pass``."""
        return self.status == PASS


@dataclass
class GateResult:
    """The gate of one request: every check, replacements used, and required checks undecided."""

    reason: str
    checks: list[Check] = field(default_factory=list)
    replacements: dict[str, str] = field(default_factory=dict)
    undecided: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether nothing is undecided and every deciding check passed."""
        return not self.undecided and all(c.passed for c in self.deciding())

    def deciding(self) -> list[Check]:
        """Return the required checks that decide the gate (replacements in place of n/a ones).

        Returns:
            Required checks that applied, and for each not-applicable one its replacement (a
            required n/a check without one is in ``undecided`` instead).
        """
        by_name = {c.name: c for c in self.checks}
        out = []
        for c in self.checks:
            if c.role != REQUIRED:
                continue
            if c.status == NA:
                if c.name in self.replacements:
                    out.append(by_name[self.replacements[c.name]])
                continue
            out.append(c)
        return out

    def failed(self) -> list[str]:
        """List what keeps the gate from passing.

        Returns:
            Names of the deciding checks that did not pass, then the undecided ones.
        """
        return [c.name for c in self.deciding() if not c.passed] + self.undecided

    def to_dict(self) -> dict[str, Any]:
        """Return the gate as a JSON-ready dict.

        Returns:
            ``reason``, ``passed``, ``failed``, ``undecided``, ``replacements`` and every check.
        """
        return {
            "reason": self.reason,
            "passed": self.passed,
            "failed": self.failed(),
            "undecided": list(self.undecided),
            "replacements": dict(self.replacements),
            "checks": [asdict(c) for c in self.checks],
        }


def resolve_bounds(reason: str, section: dict[str, Any] | None) -> dict[str, float]:
    """Resolve the bounds of ``reason``: defaults, then shared ``gates`` keys, then its own.

    Args:
        reason: the request's reason (a key of :data:`PROFILES`).
        section: ``params.yaml``'s ``gates`` section (``alpha`` and ``min_members`` shared;
            one mapping of bounds per reason), or ``None``.

    Returns:
        ``alpha``, ``min_members`` and the reason's bounds (shares in [0, 1]; AUC margin in
        AUC units).

    Raises:
        GateConfigError: an unknown reason, key or bound, or a bound that is not a number
            (YAML reads ``1e-2`` without a dot as text).
    """
    if reason not in PROFILES:
        raise GateConfigError(f"no gate profile for reason '{reason}'")
    section = dict(section or {})
    shared = {k: section.pop(k) for k in list(section) if k in SHARED_DEFAULTS}
    unknown_reasons = set(section) - set(PROFILES)
    if unknown_reasons:
        raise GateConfigError(f"gates: unknown reason(s) or key(s) {sorted(unknown_reasons)}")
    own = dict(section.get(reason) or {})
    unknown = set(own) - set(DEFAULT_BOUNDS[reason])
    if unknown:
        raise GateConfigError(
            f"gates.{reason}: unknown bound(s) {sorted(unknown)}; "
            f"allowed: {sorted(DEFAULT_BOUNDS[reason])}"
        )
    bounds = {**SHARED_DEFAULTS, **shared, **DEFAULT_BOUNDS[reason], **own}
    for key, value in bounds.items():  # YAML reads 1e-2 (no dot) as text
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise GateConfigError(f"gates: bound '{key}' must be a number, got {value!r}")
    return bounds


def _na(name: str, role: str, why: str) -> Check:
    return Check(name, role, NA, None, None, "", why)


def _at_most(name: str, role: str, value: float | None, bound: float, why_na: str) -> Check:
    if value is None:
        return _na(name, role, why_na)
    return Check(name, role, PASS if value <= bound else FAIL, value, bound, f"<= {bound}")


def _drop(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return max(0.0, before - after)


def _units(m: dict[str, Any]) -> str:
    """What the membership tests counted: images, or patient groups (clustered images)."""
    return "group(s)" if m.get("unit") == "group" else "image(s)"


def _power(m: dict[str, Any], b: dict[str, float]) -> tuple[bool, str]:
    n = m.get("n_member_units") or m.get("n_members") or 0
    notes = []
    under = n < b["min_members"]
    if under:
        notes.append(f"underpowered: {n} forgotten {_units(m)} < {int(b['min_members'])}")
    min_p = m.get("min_p")
    if min_p is not None and min_p >= b["alpha"]:
        notes.append(
            f"cannot detect at this size: smallest reachable p = {min_p:.3g} >= alpha "
            f"{b['alpha']} ({n} vs {m.get('n_nonmember_units') or m.get('n_nonmembers')} "
            f"matched held-out {_units(m)})"
        )
        under = True
    return under, "; ".join(notes)


def _membership(role: str, after: UnlearnMetrics, b: dict[str, float]) -> Check:
    m = after.membership
    if m.get("auc") is None:
        return _na("membership", role, m.get("note") or "no membership comparison possible")
    under, note = _power(m, b)
    significant = m["p_value"] < b["alpha"]
    material = m["auc"] - 0.5 > b["mia_auc_margin"]
    detail = (
        f"AUC {m['auc']:.3f} "
        + (
            f"[95% CI {m['auc_low']:.3f}, {m['auc_high']:.3f}]"
            if m.get("auc_low") is not None
            else "(too few forgotten units for an interval)"
        )
        + ", p = "
        f"{m['p_value']:.3g}; {m['n_members']} forgotten vs {m['n_nonmembers']} matched "
        f"held-out images"
    )
    if m.get("unit") == "group":
        detail += (
            f" ({m['n_member_units']} vs {m['n_nonmember_units']} patient groups; tested "
            "over group means, images of one group are not independent)"
        )
    if m.get("null"):
        detail += (
            f"; null (held-out vs held-out) AUC {m['null']['low']:.3f}-{m['null']['high']:.3f}"
        )
    return Check(
        "membership",
        role,
        FAIL if significant and material else PASS,
        m["auc"],
        0.5 + b["mia_auc_margin"],
        f"fail iff p < {b['alpha']} and AUC > {0.5 + b['mia_auc_margin']:.2f}",
        detail + (f"; {note}" if note else ""),
        under,
    )


def _member_gap(role: str, after: UnlearnMetrics, b: dict[str, float]) -> Check:
    m = after.membership
    if m.get("acc_gap") is None:
        return _na("member_accuracy_gap", role, m.get("note") or "no held-out comparison")
    under, note = _power(m, b)
    significant = m["acc_p_value"] < b["alpha"]
    material = m["acc_gap"] > b["max_member_gap"]
    detail = f"forgotten {m['member_acc']:.3f} vs matched held-out {m['nonmember_acc']:.3f}, " + (
        f"Mann-Whitney p over group accuracies = {m['acc_p_value']:.3g}"
        if m.get("unit") == "group"
        else f"Fisher p = {m['acc_p_value']:.3g}"
    )
    return Check(
        "member_accuracy_gap",
        role,
        FAIL if significant and material else PASS,
        m["acc_gap"],
        b["max_member_gap"],
        f"fail iff p < {b['alpha']} and gap > {b['max_member_gap']}",
        detail + (f"; {note}" if note else ""),
        under,
    )


def _over_forgetting(role: str, after: UnlearnMetrics, b: dict[str, float]) -> Check:
    gap = after.membership.get("acc_gap")
    if gap is None:
        return _na("over_forgetting", role, "no held-out comparison")
    return Check(
        "over_forgetting",
        role,
        PASS if gap >= -b["max_member_gap"] else FAIL,
        gap,
        -b["max_member_gap"],
        f">= -{b['max_member_gap']} (forgotten images much worse than held-out ones are "
        f"recognisable too)",
    )


def _forget_not_raised(role: str, after: UnlearnMetrics, before: UnlearnMetrics) -> Check:
    a, b = after.forget_train_acc, before.forget_train_acc
    if a is None or b is None:
        return _na("forget_not_raised", role, "no forgotten training image")
    rise = a - b
    return Check(
        "forget_not_raised",
        role,
        PASS if rise <= 1e-9 else FAIL,
        rise,
        0.0,
        "<= 0 (forgetting never makes the forgotten training images more accurate than the "
        "deployed model had them)",
    )


def _forget_not_raised_carried(
    role: str, after: UnlearnMetrics, before: UnlearnMetrics, alpha: float
) -> Check:
    """``forget_not_raised`` for an earlier request re-checked on a later revision.

    ``before`` is the production parent, which already forgot the request's rows, so its
    forget-train accuracy is a noisy floor, not the deployed model's level: one more image
    right of 20 is chance, re-learning is a significant rise. Fail iff the revision gets
    more of the n images right (k1 > k0) and P(X >= k1) < alpha for X ~ Binomial(n, p0),
    p0 = (k0 + 0.5) / (n + 1) (the parent's rate, smoothed so that k0 = 0 still admits
    chance; scipy.stats.binom).
    """
    a, b, n = after.forget_train_acc, before.forget_train_acc, after.n_forget_train
    if a is None or b is None:
        return _na("forget_not_raised", role, "no forgotten training image")
    if not n:
        return _forget_not_raised(role, after, before)
    k0, k1 = round(b * n), round(a * n)
    p = float(stats.binom.sf(k1 - 1, n, (k0 + 0.5) / (n + 1))) if k1 > k0 else 1.0
    return Check(
        "forget_not_raised",
        role,
        FAIL if k1 > k0 and p < alpha else PASS,
        a - b,
        0.0,
        f"fail iff more right than the parent (which forgot them) and binomial p < {alpha}",
        f"{k1} of {n} forgotten training images right vs the parent's {k0}; p = {p:.3g}",
    )


def retention_p_value(
    before: dict[str, np.ndarray], after: dict[str, np.ndarray], balanced: bool, seed: int = 0
) -> tuple[float, int, int]:
    """Test whether the candidate is less accurate than the deployed model on the same rows.

    One-sided, on the retained held-out rows, paired image by image. Accuracy: the exact
    McNemar test (McNemar 1947; Dietterich 1998), a binomial test on the discordant images
    (``scipy.stats.binomtest``, p = 0.5, alternative "greater"). Balanced accuracy: a
    sign-flip permutation test on the discordant images, each weighted by 1 / (classes x its
    class's row count), which is exactly the change of balanced accuracy
    (``scipy.stats.permutation_test``, 9,999 resamples, seeded); one discordant image gives
    p = 0.5.

    Args:
        before: the deployed model's outcomes, ``{"label": (N,) int, "correct": (N,) 0/1,
            "rows": str}`` (:attr:`UnlearnMetrics.retain_heldout_outcomes`; ``rows``
            fingerprints the image ids and their order).
        after: the candidate's outcomes, in the same row order.
        balanced: test balanced accuracy instead of accuracy.
        seed: seed of the permutation test.

    Returns:
        ``(p, lost, gained)``: the p-value (1.0 when nothing was lost), images only the
        deployed model got right, and images only the candidate got right.

    Raises:
        ValueError: the two were measured on different rows.
    """
    labels = np.asarray(before["label"])
    same = (
        len(labels) == len(after["label"]) == len(before["correct"]) == len(after["correct"])
        and np.array_equal(labels, after["label"])
        and before.get("rows") == after.get("rows")
    )
    if not same:
        raise ValueError(
            "retention: the candidate and the deployed model were measured on different "
            f"retained held-out rows ({len(labels)} vs {len(after['label'])})"
        )
    diff = np.asarray(before["correct"], dtype=np.int64) - np.asarray(after["correct"], np.int64)
    lost, gained = int((diff == 1).sum()), int((diff == -1).sum())
    if lost == 0:
        return 1.0, lost, gained
    if not balanced:
        p = stats.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue
        return float(p), lost, gained
    if lost + gained == 1:  # one discordant image: its sign flips with probability 1/2
        return 0.5, lost, gained  # (scipy's permutation_test needs two observations)
    classes, counts = np.unique(labels, return_counts=True)
    size = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    discordant = diff != 0
    weights = np.array([1.0 / (len(classes) * size[k]) for k in labels[discordant].tolist()])
    result = stats.permutation_test(
        (weights * diff[discordant],),
        lambda x, axis: np.sum(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=9999,
        alternative="greater",
        random_state=seed,
    )
    return float(result.pvalue), lost, gained


def _retention(
    name: str,
    role: str,
    drop: float | None,
    bound: float,
    alpha: float,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    balanced: bool,
) -> Check:
    if drop is None:
        return _na(name, role, "no retained held-out rows")
    if not before or not after:
        check = _at_most(name, role, drop, bound, "")
        check.detail = "no per-image outcomes to pair: the bound alone decides"
        check.underpowered = True
        return check
    p, lost, gained = retention_p_value(before, after, balanced)
    test = "paired sign-flip permutation" if balanced else "McNemar"
    counts = (
        f"{lost} retained held-out image(s) lost, {gained} gained of {len(before['label'])}; "
        f"{test} p = {p:.3g}"
    )
    smallest_p = 0.5 ** (lost + gained)
    if lost and smallest_p >= alpha:  # the test cannot reach alpha: the bound alone decides
        check = _at_most(name, role, drop, bound, "")
        check.detail = (
            f"{counts}; underpowered: {lost + gained} discordant image(s), smallest reachable "
            f"p = {smallest_p:.3g} >= alpha {alpha}, so the bound alone decides"
        )
        check.underpowered = True
        return check
    material, significant = drop > bound, p < alpha
    return Check(
        name,
        role,
        FAIL if material and significant else PASS,
        drop,
        bound,
        f"fail iff drop > {bound} and {test} p < {alpha}",
        counts + ("" if significant or not material else "; above the bound but not significant"),
    )


def _class_recall_drop(
    role: str, after: UnlearnMetrics, before: UnlearnMetrics, b: dict[str, float]
) -> Check:
    drops = {
        k: before.retain_heldout_recall[k] - v
        for k, v in after.retain_heldout_recall.items()
        if v is not None and before.retain_heldout_recall.get(k) is not None
    }
    if not drops:
        return _na("class_recall_drop", role, "no retained class in the held-out rows")
    worst = max(drops, key=drops.get)
    value = max(0.0, drops[worst])
    return Check(
        "class_recall_drop",
        role,
        PASS if value <= b["max_class_recall_drop"] else FAIL,
        value,
        b["max_class_recall_drop"],
        f"<= {b['max_class_recall_drop']}",
        f"largest drop: class {worst}",
    )


CHECKS: dict[str, Callable[[str, UnlearnMetrics, UnlearnMetrics, dict[str, float]], Check]] = {
    "forget_train_acc": lambda role, a, _, b: _at_most(
        "forget_train_acc", role, a.forget_train_acc, b["max_forget_acc"], "no forget-train rows"
    ),
    "forget_heldout_acc": lambda role, a, _, b: _at_most(
        "forget_heldout_acc",
        role,
        a.forget_heldout_acc,
        b["max_forget_acc"],
        "no held-out row matches the selector",
    ),
    "retain_drop": lambda role, a, before, b: _retention(
        "retain_drop",
        role,
        _drop(before.retain_heldout_acc, a.retain_heldout_acc),
        b["max_retain_drop"],
        b["alpha"],
        before.retain_heldout_outcomes,
        a.retain_heldout_outcomes,
        balanced=False,
    ),
    "retain_balanced_drop": lambda role, a, before, b: _retention(
        "retain_balanced_drop",
        role,
        _drop(before.retain_heldout_balanced_acc, a.retain_heldout_balanced_acc),
        b["max_balanced_drop"],
        b["alpha"],
        before.retain_heldout_outcomes,
        a.retain_heldout_outcomes,
        balanced=True,
    ),
    "class_recall_drop": lambda role, a, before, b: _class_recall_drop(role, a, before, b),
    "membership": lambda role, a, _, b: _membership(role, a, b),
    "member_accuracy_gap": lambda role, a, _, b: _member_gap(role, a, b),
    "over_forgetting": lambda role, a, _, b: _over_forgetting(role, a, b),
    "forget_not_raised": lambda role, a, before, _: _forget_not_raised(role, a, before),
}


def evaluate_gates(
    reason: str,
    after: UnlearnMetrics,
    before: UnlearnMetrics,
    section: dict[str, Any] | None = None,
    carried: bool = False,
) -> GateResult:
    """Check a candidate against the profile of ``reason`` (see the module docstring).

    Args:
        reason: the request's reason (chooses the profile).
        after: the candidate's metrics.
        before: the deployed model's metrics (the retention baseline).
        section: ``params.yaml``'s ``gates`` section, or ``None`` for the defaults.
        carried: an earlier request re-checked with the parent (which already forgot it) as
            ``before``; ``forget_not_raised`` then fails only on a significant rise
            (:func:`_forget_not_raised_carried`).

    Returns:
        Every check of the profile, the replacements used and the required checks left
        undecided; ``passed`` says whether the candidate may be exported.

    Raises:
        GateConfigError: the ``gates`` section names an unknown reason or bound.
        ValueError: the two models' retention outcomes were measured on different rows.
    """
    b = resolve_bounds(reason, section)
    result = GateResult(reason)
    for spec in PROFILES[reason]:
        if carried and spec.name == "forget_not_raised":
            check = _forget_not_raised_carried(spec.role, after, before, b["alpha"])
        else:
            check = CHECKS[spec.name](spec.role, after, before, b)
        result.checks.append(check)
    by_name = {c.name: c for c in result.checks}
    for spec in PROFILES[reason]:
        check = by_name[spec.name]
        if spec.role != REQUIRED or check.status != NA:
            continue
        if spec.replaced_by:
            result.replacements[spec.name] = spec.replaced_by
            check.detail += f"; replaced by {spec.replaced_by}"
        else:
            result.undecided.append(spec.name)
            check.detail += "; required and not applicable: the gate cannot pass"
    return result


def describe_profiles() -> str:
    """Describe the shipped profiles as a markdown table (README, reports).

    Returns:
        A table with one row per reason: required checks (with their n/a replacement) and
        informative ones; no trailing newline.
    """
    lines = ["| reason | required | informative |", "|---|---|---|"]
    for reason, specs in PROFILES.items():
        req = [
            s.name + (f" (n/a: {s.replaced_by})" if s.replaced_by else "")
            for s in specs
            if s.role == REQUIRED
        ]
        inf = [s.name for s in specs if s.role == INFORMATIVE]
        lines.append(f"| {reason} | {', '.join(req)} | {', '.join(inf)} |")
    return "\n".join(lines)
