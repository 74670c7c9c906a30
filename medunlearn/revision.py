"""Candidates of a maintenance run: evaluation, gates, selection and the run's report files.

A candidate is one model the run could ship: a sweep run, a swap or an interpolation. Each
is measured on the held-out cohorts and checked against the gate profile of the request's
reason. Selection rule (``maintain.select_by`` in ``params.yaml``): among candidates that
pass every gate, the highest value of ``select_by`` (default ``retain_test_acc``), ties
broken by the lower forget-test accuracy, then by name. No passing candidate: no revision.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from typing import Any

from medunlearn.gates import GateResult

SELECT_KEYS = ("retain_test_acc", "test_acc", "retain_train_acc")
TRADEOFF_FIELDS = (
    "candidate",
    "kind",
    "forget_test_acc",
    "forget_train_acc",
    "retain_test_acc",
    "test_acc",
    "mia_auc",
    "passed",
    "selected",
)


class GatesFailed(RuntimeError):
    """No candidate passed the gates; the report was written, nothing is exported."""


@dataclass
class CandidateResult:
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
        return bool(self.gates.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_candidate(
    name: str,
    kind: str,
    config: dict[str, Any],
    metrics: Any,
    gates: GateResult,
    seconds: float = 0.0,
    checkpoint: str = "",
) -> CandidateResult:
    return CandidateResult(
        name, kind, config, metrics.to_dict(), gates.to_dict(), seconds, checkpoint
    )


def select_candidate(
    candidates: list[CandidateResult], select_by: str = "retain_test_acc"
) -> CandidateResult | None:
    """The best passing candidate by the documented rule, or ``None``."""
    if select_by not in SELECT_KEYS:
        raise ValueError(f"maintain.select_by must be one of {SELECT_KEYS}, not '{select_by}'")
    passing = [c for c in candidates if c.passed]
    if not passing:
        return None

    def key(c: CandidateResult) -> tuple[float, float, str]:
        value = c.metrics.get(select_by)
        forget = c.metrics.get("forget_test_acc")
        return (
            -(value if value is not None else -1.0),
            forget if forget is not None else 1.0,
            c.name,
        )

    return sorted(passing, key=key)[0]


def tradeoff_rows(candidates: list[CandidateResult], selected: str | None) -> list[dict[str, Any]]:
    rows = []
    for c in candidates:
        m = c.metrics
        rows.append(
            {
                "candidate": c.name,
                "kind": c.kind,
                "forget_test_acc": m.get("forget_test_acc"),
                "forget_train_acc": m.get("forget_train_acc"),
                "retain_test_acc": m.get("retain_test_acc"),
                "test_acc": m.get("test_acc"),
                "mia_auc": (m.get("mia_loss") or {}).get("auc"),
                "passed": c.passed,
                "selected": c.name == selected,
            }
        )
    return rows


def tradeoff_csv(candidates: list[CandidateResult], selected: str | None) -> str:
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
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def summary_markdown(
    request: dict[str, Any],
    counts: dict[str, int],
    deployed: dict[str, Any],
    candidates: list[CandidateResult],
    selected: CandidateResult | None,
    onnx_path: str | None = None,
    parity: dict[str, Any] | None = None,
) -> str:
    """The run's one-screen summary (also a Prefect markdown artifact)."""
    lines = [
        f"# Revision for request `{request['hash']}` ({request['reason']})",
        "",
        f"Forgot {counts.get('forget_train', 0)} training images "
        f"(selector keys: {', '.join(sorted(request['selector']))}"
        + (f", fraction {request['fraction']}" if request.get("fraction") else "")
        + f"); retain-train {counts.get('retain_train', 0)}; held-out forget/retain "
        f"{counts.get('forget_test', 0)}/{counts.get('retain_test', 0)}.",
        f"Deployed model: forget-test acc {_f(deployed.get('forget_test_acc'))}, retain-test acc "
        f"{_f(deployed.get('retain_test_acc'))}.",
        "",
        "| candidate | kind | forget-test | retain-test | test | MIA AUC | gates |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in candidates:
        m = c.metrics
        mark = " **(selected)**" if selected is not None and c.name == selected.name else ""
        lines.append(
            f"| {c.name}{mark} | {c.kind} | {_f(m.get('forget_test_acc'))} | "
            f"{_f(m.get('retain_test_acc'))} | {_f(m.get('test_acc'))} | "
            f"{_f((m.get('mia_loss') or {}).get('auc'))} | {'pass' if c.passed else 'FAIL'} |"
        )
    lines += ["", "Gates of the " + ("selected candidate:" if selected else "best candidate:")]
    shown = selected or (candidates[0] if candidates else None)
    if shown is not None:
        for check in shown.gates["checks"]:
            lines.append(
                f"- {check['name']}: {_f(check['value'])} (bound {check['rule']}) "
                f"{'pass' if check['passed'] else 'FAIL'}"
            )
    if selected is None:
        lines += ["", "**No candidate passed the gates: no revision exported.**"]
    else:
        lines += ["", f"Selected `{selected.name}`."]
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
