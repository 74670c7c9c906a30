"""Candidates of a maintenance run: evaluation, gates, selection and the run's report files.

A candidate is one model the run could ship: a sweep run, a swap or an interpolation. Each
is measured on the held-out cohorts and checked against the gate profile of the request's
reason. Selection rule (``maintain.select_by`` in ``params.yaml``): among candidates that
pass every gate, the highest value of ``select_by`` (default ``retain_test_acc``); ties are
broken by how close the forgetting is to its target, then by name. The target depends on the
reason: a retired class should score zero (lower forget-train accuracy first), every other
reason should make the forgotten images look unseen (membership AUC closest to 0.5, then the
member/held-out accuracy gap closest to 0), so a tie never favours over-forgetting, which
itself reveals the cohort (the "Streisand effect"). No passing candidate: no revision.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from typing import Any

from medunlearn.data.request import build_cohorts
from medunlearn.errors import Refusal
from medunlearn.evidence.gates import GateResult, evaluate_gates
from medunlearn.evidence.metrics import unlearning_metrics

SELECT_KEYS = ("retain_test_acc", "test_acc", "retain_train_acc")
TRADEOFF_FIELDS = (
    "candidate",
    "kind",
    "forget_train_acc",
    "forget_heldout_acc",
    "nonmember_acc",
    "retain_test_acc",
    "retain_test_balanced_acc",
    "test_acc",
    "mia_auc",
    "mia_p_value",
    "passed",
    "selected",
)


class GatesFailed(Refusal, RuntimeError):
    """No candidate passed the gates; the report was written, nothing is exported."""


@dataclass
class CandidateResult:
    """One candidate of a maintenance run, measured and gated.

    Attributes:
        name: the candidate's name (sweep run, swap or interpolation).
        kind: ``sweep``, ``swap`` or ``interpolate``.
        config: the method and its hyperparameters.
        metrics: ``UnlearnMetrics.to_dict()`` (accuracies in [0, 1], ``membership``).
        gates: ``GateResult.to_dict()`` (``passed``, ``checks``, ``failed``, ``reason``).
        seconds: wall seconds it took to make.
        checkpoint: its checkpoint path ("" when none was written).
        extra: anything else the run records.
        passed: whether every required gate passed.
    """

    name: str
    kind: str  # sweep | swap | interpolate
    config: dict[str, Any]
    metrics: dict[str, Any]  # UnlearnMetrics.to_dict()
    gates: dict[str, Any]  # GateResult.to_dict()
    seconds: float = 0.0
    checkpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every required gate passed (``gates["passed"]``)."""
        return bool(self.gates.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        """Convert to plain values for JSON.

        Returns:
            every field, nested dicts deep-copied (``dataclasses.asdict``).
        """
        return asdict(self)


def failed_run(name: str, kind: str, config: dict[str, Any], error: Exception) -> dict[str, Any]:
    """Record a run rejected before evaluation (its weights diverged).

    Named in the report, the card and the metrics file; never scored, cached, composed or
    exported.

    Args:
        name: the run's name.
        kind: its kind (``sweep``, ...).
        config: its method and hyperparameters.
        error: why it was rejected (its message is kept).

    Returns:
        ``name``, ``kind``, ``config`` and ``reason`` (``str(error)``).
    """
    return {"name": name, "kind": kind, "config": config, "reason": str(error)}


def make_candidate(
    name: str,
    kind: str,
    config: dict[str, Any],
    metrics: Any,
    gates: GateResult,
    seconds: float = 0.0,
    checkpoint: str = "",
) -> CandidateResult:
    """Build a candidate from its metrics and gate result.

    Args:
        name: the candidate's name.
        kind: ``sweep``, ``swap`` or ``interpolate``.
        config: its method and hyperparameters.
        metrics: its ``UnlearnMetrics`` (anything with ``to_dict()``).
        gates: its gate result.
        seconds: wall seconds it took to make.
        checkpoint: its checkpoint path.

    Returns:
        the candidate, metrics and gates as plain dicts.
    """
    return CandidateResult(
        name, kind, config, metrics.to_dict(), gates.to_dict(), seconds, checkpoint
    )


def select_candidate(
    candidates: list[CandidateResult], select_by: str = "retain_test_acc"
) -> CandidateResult | None:
    """Pick the best passing candidate by the rule of the module docstring.

    Args:
        candidates: the run's candidates, passing or not.
        select_by: the metric to maximise, one of :data:`SELECT_KEYS` (accuracies in
            [0, 1]); ties go to the forgetting closest to its target, then to the name.

    Returns:
        the selected candidate, or None when none passed its gates.

    Raises:
        ValueError: ``select_by`` is not one of :data:`SELECT_KEYS`.
    """
    if select_by not in SELECT_KEYS:
        raise ValueError(f"maintain.select_by must be one of {SELECT_KEYS}, not '{select_by}'")
    passing = [c for c in candidates if c.passed]
    if not passing:
        return None

    def key(c: CandidateResult) -> tuple[float, float, float, str]:
        value = c.metrics.get(select_by)
        forget = c.metrics.get("forget_train_acc")
        membership = c.metrics.get("membership") or {}
        auc, gap = membership.get("auc"), membership.get("acc_gap")
        auc_off = abs(auc - 0.5) if auc is not None else 1.0
        gap_off = abs(gap) if gap is not None else 1.0
        if c.gates.get("reason") == "class_retirement":
            tie = (forget if forget is not None else 1.0, auc_off)
        else:
            tie = (auc_off, gap_off)
        return (-(value if value is not None else -1.0), *tie, c.name)

    return sorted(passing, key=key)[0]


def tradeoff_rows(candidates: list[CandidateResult], selected: str | None) -> list[dict[str, Any]]:
    """Tabulate the forgetting/retention trade-off of each candidate.

    Args:
        candidates: the run's candidates.
        selected: the selected candidate's name, or None.

    Returns:
        one row per candidate, keyed by :data:`TRADEOFF_FIELDS`: accuracies in [0, 1], the
        membership attack's AUC in [0, 1] and p-value (None where not measured), ``passed``
        and ``selected``.
    """
    rows = []
    for c in candidates:
        m = c.metrics
        membership = m.get("membership") or {}
        rows.append(
            {
                "candidate": c.name,
                "kind": c.kind,
                "forget_train_acc": m.get("forget_train_acc"),
                "forget_heldout_acc": m.get("forget_heldout_acc"),
                "nonmember_acc": membership.get("nonmember_acc"),
                "retain_test_acc": m.get("retain_test_acc"),
                "retain_test_balanced_acc": m.get("retain_test_balanced_acc"),
                "test_acc": m.get("test_acc"),
                "mia_auc": membership.get("auc"),
                "mia_p_value": membership.get("p_value"),
                "passed": c.passed,
                "selected": c.name == selected,
            }
        )
    return rows


def tradeoff_csv(candidates: list[CandidateResult], selected: str | None) -> str:
    """Write :func:`tradeoff_rows` as CSV text.

    Args:
        candidates: the run's candidates.
        selected: the selected candidate's name, or None.

    Returns:
        a header of :data:`TRADEOFF_FIELDS` and one line per candidate; floats rounded to 6
        decimals, None as an empty cell; Unix line ends.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TRADEOFF_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in tradeoff_rows(candidates, selected):
        writer.writerow(
            {
                k: ("" if v is None else round(v, 6) if isinstance(v, float) else v)
                for k, v in row.items()
            }
        )
    return buf.getvalue()


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"
    return str(v)


def _recalls(recall: dict[str, float | None] | None) -> str:
    if not recall:
        return "n/a"
    return " ".join(f"{k}:{'n/a' if v is None else f'{v:.2f}'}" for k, v in recall.items())


def gate_lines(gates: dict[str, Any]) -> list[str]:
    """Render a gate result's checks as markdown list lines.

    Args:
        gates: ``GateResult.to_dict()``.

    Returns:
        one line per check: ``- [role] name value (rule) status: detail`` (value to 3
        decimals; a failure in bold).
    """
    lines = []
    for check in gates["checks"]:
        status = {"pass": "pass", "fail": "**FAIL**", "not_applicable": "not applicable"}[
            check["status"]
        ]
        value = "" if check["value"] is None else f" {_f(check['value'])}"
        rule = f" ({check['rule']})" if check["rule"] else ""
        detail = f": {check['detail']}" if check["detail"] else ""
        lines.append(f"- [{check['role']}] {check['name']}{value}{rule} {status}{detail}")
    return lines


def baseline_sentence(reason: str, baseline: dict[str, Any] | None) -> str:
    """Say what the deployed model's own result on the profile tells about the evidence.

    Args:
        reason: the request's reason (``class_retirement`` words it differently).
        baseline: the deployed model's gate result on the same profile
            (``GateResult.to_dict()``), or None when not evaluated.

    Returns:
        one sentence; "" without a baseline.
    """
    if baseline is None:
        return ""
    if not baseline["passed"]:
        return (
            f"The deployed model fails this profile ({', '.join(baseline['failed'])}): the "
            "checks can tell it has not forgotten, so a passing candidate is evidence of change."
        )
    if reason == "class_retirement":
        return "The deployed model passes this profile: the class was not predicted before."
    return (
        "The deployed model already passes this profile: it shows no measurable memorisation "
        "of this cohort (the membership checks could not tell its images from held-out ones), "
        "so the gates here certify retention and the absence of measurable memorisation, not a "
        "change."
    )


def evidence_caveats(gates: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    """What a gate pass cannot show, one line each (empty: the pass is evidence of change).

    - ``not discriminating``: the untouched deployed model passes the same required profile
      (``baseline``, from ``gates.evaluate_gates(reason, before, before)``), so a pass does
      not tell the revision from the model it revises.
    - ``underpowered``: a deciding (required) check could not reach its significance level at
      this cohort size; its own detail says why (``n = 8 < 10``, smallest reachable p).

    ``gates`` is a ``GateResult.to_dict()``; a gate that failed has no caveats (it was not
    passed). Shown by the card, ``medunlearn card``, ``medunlearn registry`` and the flow's
    artifact; promotion to production needs ``--accept REASON`` while any remain.

    Args:
        gates: the revision's gate result (``GateResult.to_dict()``).
        baseline: the deployed model's result on the same profile, or None.

    Returns:
        ``not discriminating: ...`` and ``underpowered: <check>: ...`` lines; empty when the
        gates failed or the pass has no caveat.
    """
    if not gates.get("passed"):
        return []
    out = []
    if baseline is not None and baseline.get("passed"):
        out.append(
            f"not discriminating: the deployed model passes the {gates.get('reason')} profile too"
        )
    replacing = set((gates.get("replacements") or {}).values())  # stand-ins for n/a checks
    for c in gates.get("checks", []):
        deciding = c.get("role") == "required" and c.get("status") != "not_applicable"
        if (deciding or c.get("name") in replacing) and c.get("underpowered"):
            detail = str(c.get("detail") or "the bound alone decides")
            notes = [
                part.strip().removeprefix("underpowered: ")
                for part in detail.split(";")
                if part.strip().startswith(("underpowered", "cannot detect"))
            ]
            out.append(f"underpowered: {c['name']}: {'; '.join(notes) or detail}")
    return out


def pool_sentence(check: dict[str, Any] | None) -> str:
    """Say which held-out splits the membership evidence drew from, and why.

    Args:
        check: the cohorts' pool check (``excluded``, ``auc_val_vs_test`` in [0, 1],
            ``p_value``, ``note``), or None.

    Returns:
        one sentence; "" without a check.
    """
    if not check:
        return ""
    if check.get("excluded"):
        return (
            f"Non-members come from the validation split only: the test split is shifted from "
            f"it (deployed model, label-matched: AUC {check['auc_val_vs_test']:.3f}, p "
            f"{check['p_value']:.2g}), and training rows resemble the validation split."
        )
    if "auc_val_vs_test" in check:
        return (
            f"Non-members come from the validation and test splits (no shift between them: "
            f"AUC {check['auc_val_vs_test']:.3f}, p {check['p_value']:.2g})."
        )
    return f"Non-members come from the validation and test splits ({check.get('note', '')})."


def summary_markdown(
    request: dict[str, Any],
    counts: dict[str, int],
    deployed: dict[str, Any],
    candidates: list[CandidateResult],
    selected: CandidateResult | None,
    onnx_path: str | None = None,
    parity: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    failed: list[dict[str, Any]] | None = None,
) -> str:
    """Write the run's one-screen summary (also a Prefect markdown artifact).

    Args:
        request: the request's ``hash``, ``reason``, ``selector`` and ``fraction``.
        counts: examples per cohort (``forget_train``, ``retain_train``,
            ``inherited_train``).
        deployed: the deployed model's metrics (accuracies in [0, 1], ``membership``).
        candidates: the run's candidates, in table order.
        selected: the selected candidate, or None when none passed.
        onnx_path: the exported ONNX file, or None.
        parity: ONNX parity (``max_abs_diff`` in logits, ``n_images``,
            ``labels_identical``), or None.
        baseline: the deployed model's gate result on the same profile, or None.
        failed: runs rejected before evaluation (:func:`failed_run`), listed with their
            reason.

    Returns:
        the markdown: cohorts and matching, the deployed model, one table row per candidate
        (accuracies and AUC to 3 decimals), the gates of the selected (or first) candidate,
        the caveats and the ONNX file; ending with a newline.
    """
    dm = deployed.get("membership") or {}
    matching = dm.get("matching") or {}
    lines = [
        f"# Revision for request `{request['hash']}` ({request['reason']})",
        "",
        f"Forgot {counts.get('forget_train', 0)} training images "
        f"(selector keys: {', '.join(sorted(request['selector']))}"
        + (f", fraction {request['fraction']}" if request.get("fraction") else "")
        + f"); retain-train {counts.get('retain_train', 0)}"
        + (
            f"; {counts['inherited_train']} training images earlier requests already removed "
            "from the starting model are in neither cohort (not unlearned again)"
            if counts.get("inherited_train")
            else ""
        )
        + ". Membership evidence compares "
        + (
            "them"
            if not matching.get("unmatched_members")
            else f"{dm.get('n_members', 0)} of them (the held-out rows of their strata "
            "allowed no more at one mix)"
        )
        + f" with {dm.get('n_nonmembers', 0)} held-out images matched on "
        f"{', '.join(matching.get('columns') or ['nothing'])}"
        + ("" if matching.get("exact", True) else " (thin strata: paired 1:1)")
        + (
            f"; tested over {dm.get('n_member_units')} vs {dm.get('n_nonmember_units')} "
            "patient groups (their images are not independent)"
            if dm.get("unit") == "group"
            else ""
        )
        + ".",
        f"Deployed model: forget-train acc {_f(deployed.get('forget_train_acc'))}, "
        f"matched held-out acc {_f(dm.get('nonmember_acc'))}, membership AUC "
        f"{_f(dm.get('auc'))} (p {_f(dm.get('p_value'))}), retain-test acc "
        f"{_f(deployed.get('retain_test_acc'))} (balanced {_f(deployed.get('retain_test_balanced_acc'))}); "
        f"retained held-out acc {_f(deployed.get('retain_heldout_acc'))} (balanced "
        f"{_f(deployed.get('retain_heldout_balanced_acc'))}), the gates' retention baseline.",
        baseline_sentence(request["reason"], baseline),
        pool_sentence((baseline or {}).get("pool_check")),
        "",
        "| candidate | kind | forget-train | forget held-out | matched held-out | retain-test "
        "| retain bal. | recall per class (retained held-out) | test | MIA AUC | MIA p | gates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in candidates:
        m = c.metrics
        mem = m.get("membership") or {}
        mark = " **(selected)**" if selected is not None and c.name == selected.name else ""
        lines.append(
            f"| {c.name}{mark} | {c.kind} | {_f(m.get('forget_train_acc'))} | "
            f"{_f(m.get('forget_heldout_acc'))} | {_f(mem.get('nonmember_acc'))} | "
            f"{_f(m.get('retain_test_acc'))} | {_f(m.get('retain_test_balanced_acc'))} | "
            f"{_recalls(m.get('retain_heldout_recall'))} | "
            f"{_f(m.get('test_acc'))} | {_f(mem.get('auc'))} | {_f(mem.get('p_value'))} | "
            f"{'pass' if c.passed else 'FAIL: ' + ', '.join(c.gates.get('failed', []))} |"
        )
    if failed:
        lines += ["", "Runs rejected before evaluation (not scored, composed or exported):"]
        lines += [f"- `{f['name']}` ({f['kind']}): {f['reason']}" for f in failed]
    shown = selected or (candidates[0] if candidates else None)
    if shown is not None:
        lines += [
            "",
            f"Gates of {'the selected' if selected else 'the first'} candidate `{shown.name}`:",
            *gate_lines(shown.gates),
        ]
    if selected is None:
        lines += ["", "**No candidate passed the gates: no revision exported.**"]
    else:
        lines += ["", f"Selected `{selected.name}`."]
        caveats = evidence_caveats(selected.gates, baseline)
        if caveats:
            lines += ["", "**What this pass cannot show:**", *(f"- {c}" for c in caveats)]
        if onnx_path:
            lines.append(
                f"ONNX: `{onnx_path}`"
                + (
                    f" (parity: max |diff| {parity['max_abs_diff']:.2e} on {parity['n_images']} "
                    f"validation images, labels identical: {parity['labels_identical']})"
                    if parity
                    else ""
                )
            )
    return "\n".join(lines) + "\n"


def run_timings(
    laps: dict[str, float],
    sweep_runs: list[dict[str, Any]],
    composed: list[dict[str, Any]],
    evaluate_seconds: float,
    flow_started_at: float,
) -> dict[str, Any]:
    """Step wall seconds, seconds spent computing, and the orchestration overhead.

    Compute is what the tasks timed themselves: the sweep's span from the first run's start
    to the last run's end (runs overlap on a thread pool; a run restored from the cache
    started before ``flow_started_at`` and counts zero), composition's fine-tuning and
    interpolation, and evaluation. Overhead is every other second of the flow: Prefect task
    dispatch and result persistence, Great Expectations, checkpoint I/O, ONNX export, reports.

    Args:
        laps: wall seconds of each flow step, by step name.
        sweep_runs: the sweep's runs, each with ``seconds`` (its own duration) and
            ``finished_at`` (epoch seconds).
        composed: composed candidates, each with ``seconds``.
        evaluate_seconds: seconds spent evaluating candidates.
        flow_started_at: the flow's start (epoch seconds); runs that started before it came
            from the cache.

    Returns:
        ``step_seconds`` (``laps``), ``compute_seconds`` (``unlearn``, ``compose``,
        ``evaluate``), ``flow_seconds`` (the sum of the laps), ``overhead_seconds`` (flow
        minus compute) and ``cached_runs`` (a count); seconds rounded to milliseconds.
    """
    fresh = [r for r in sweep_runs if r["finished_at"] - r["seconds"] >= flow_started_at]
    unlearn = (
        max(r["finished_at"] for r in fresh) - min(r["finished_at"] - r["seconds"] for r in fresh)
        if fresh
        else 0.0
    )
    compute = {
        "unlearn": round(unlearn, 3),
        "compose": round(sum(c.get("seconds", 0.0) for c in composed), 3),
        "evaluate": round(evaluate_seconds, 3),
    }
    total = sum(laps.values())
    return {
        "step_seconds": dict(laps),
        "compute_seconds": compute,
        "flow_seconds": round(total, 3),
        "overhead_seconds": round(total - sum(compute.values()), 3),
        "cached_runs": len(sweep_runs) - len(fresh),
    }


def recheck_requests(
    model: Any,
    deployed: Any,
    cohorts: Any,
    carried: list[tuple[str, Any]],
    bounds: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Gate results of ``model`` for each earlier request it must keep forgotten.

    Each ``(id, request)`` gets its own forget cohorts on the same data (``cohorts`` gives
    the manifest and opened splits) and its own reason's profile, with ``deployed`` (the
    parent: it already forgot an inherited request; one it did not is forgotten again in
    this revision) as the "before": a later revision that re-learned an earlier consent
    withdrawal or retired class fails here even when the new request passes.
    Retention is measured on the revision's own retain cohorts (every forgotten row left
    out), so the new request's forgetting never counts as lost retention of an earlier one.

    Args:
        model: the revision's model.
        deployed: the model it revises (the "before").
        cohorts: the revision's cohorts (manifest, opened splits, retain cohorts).
        carried: ``(ledger id, request)`` pairs of earlier requests.
        bounds: the ``gates`` section of ``params.yaml``.

    Returns:
        ledger id -> ``GateResult.to_dict()`` of the revision on that request
        (``carried=True``); empty when nothing is carried.
    """
    out = {}
    for request_id, request in carried:
        own = request_cohorts(cohorts, request)
        before = unlearning_metrics(deployed, own)
        after = unlearning_metrics(model, own)
        out[request_id] = evaluate_gates(
            request.reason, after, before, bounds, carried=True
        ).to_dict()
    return out


def request_cohorts(cohorts: Any, request: Any) -> Any:
    """The evidence cohorts of one request inside a revision that forgets more.

    Forget cohorts (train and held-out) are the request's own rows, so its gates measure
    what *it* asked to forget (a consent request carried with a retired class must not be
    judged on the class's images); retain cohorts are the revision's (every forgotten row
    left out), so another request's forgetting never counts as lost retention.

    Args:
        cohorts: the revision's cohorts (manifest, opened splits, retain cohorts and masks,
            pool).
        request: one request (its own ``carried``/``inherited`` are cleared).

    Returns:
        the request's cohorts with the revision's retain cohorts, retain masks and pool.
    """
    from dataclasses import replace

    own = build_cohorts(
        cohorts.manifest,
        cohorts.train,
        cohorts.val,
        cohorts.test,
        cohorts.class_names,
        replace(request, carried=(), inherited=()),
    )
    return replace(
        own,
        retain_train=cohorts.retain_train,
        retain_val=cohorts.retain_val,
        retain_test=cohorts.retain_test,
        masks=replace(
            own.masks,
            retain_train=cohorts.masks.retain_train,
            retain_val=cohorts.masks.retain_val,
            retain_test=cohorts.masks.retain_test,
        ),
        pool_splits=cohorts.pool_splits,
        pool_check=cohorts.pool_check,
    )
