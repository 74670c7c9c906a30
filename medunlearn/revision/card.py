"""The revision card: an audit-ready record of one revision, readable without the code.

A privacy officer or clinical safety reviewer reads ``card.md``; machines read ``card.json``
(the same content). It says what was forgotten and why (reason, counts, the request's hash
and its selector hashed: never raw patient or image ids), the evidence (every gate with its
value, bound and outcome; forget vs held-out accuracy; the membership attack's rank AUC with
its bootstrap 95% interval and the null between two halves of the non-members, see
``medunlearn.evidence.membership``), the lineage (parent version, data version, params hash, code commit),
the artifacts' sha256, the promotion history, and the per-example audit once
``medunlearn audit`` has run (``audit.json`` next to the record). Written here because no
library has this record; it is plain JSON and markdown so it diffs in git. A third file,
``report.html``, shows the same card with the run's validation results and trade-off plot
in one self-contained page for a browser (``medunlearn.revision.report``).
"""

from __future__ import annotations

import json
from typing import Any

from medunlearn.data.manifest import hash_identifier
from medunlearn.data.request import IDENTIFIER_KEYS
from medunlearn.revision.report import render_report


def hashed_selector(selector: dict[str, Any]) -> dict[str, Any]:
    """Replace every identifier list of a request selector by salted hashes.

    Args:
        selector: the request's selector (``patient_ids``, ``image_ids``, other keys); None
            counts as empty.

    Returns:
        a copy with ``patient_ids`` and ``image_ids`` each a sorted list of
        ``hash_identifier`` tokens (``pt-`` and 10 hex digits); other keys unchanged.
    """
    out = dict(selector or {})
    for key in IDENTIFIER_KEYS:
        if key in out:
            out[key] = sorted(hash_identifier(str(v)) for v in out[key])
    return out


AUDIT_KEYS = (
    "status",
    "verdict",
    "n_references",
    "seeds",
    "epochs",
    "recipe_epochs",
    "n_forget_train",
    "n_members",
    "n_nonmembers",
    "auc",
    "auc_p_value",
    "tpr_at_5fpr",
    "flagged",
    "expected",
    "flagged_p_value",
    "nonmember_flagged",
    "trained_now",
    "from_cache",
    "seconds",
    "audited_at",
)


def card_json(
    record: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
    audit: dict[str, Any] | None = None,
) -> dict:
    """The card's content from a revision record and its promotion history.

    Args:
        record: the revision record.
        history: its promotion history (``Registry.history``).
        audit: its per-example audit (``medunlearn.revision.audit``), or None if not run.

    Returns:
        The card as a JSON-ready dict.
    """
    metrics = record.get("metrics") or {}
    membership = metrics.get("membership") or {}
    return {
        "model": record.get("model"),
        "version": record.get("version"),
        "kind": record.get("kind"),
        "selected": record.get("candidate"),  # the chosen candidate (method or composition)
        "forgotten": {
            "requests": record.get("requests", []),
            # ids among them the parent's weights had already forgotten (not unlearned again)
            "inherited": list(record.get("inherited") or []),
            "counts": record.get("counts", {}),
        },
        "evidence": {
            "gates_passed": (record.get("gates") or {}).get("passed"),
            "caveats": list(record.get("caveats") or []),
            "deployed_gates_passed": record.get("deployed_gates_passed"),
            "checks": [
                {
                    k: c.get(k)
                    for k in (
                        "name",
                        "role",
                        "status",
                        "value",
                        "bound",
                        "rule",
                        "detail",
                        "underpowered",
                    )
                }
                for c in (record.get("gates") or {}).get("checks", [])
            ],
            "forget_train_acc": metrics.get("forget_train_acc"),
            "forget_heldout_acc": metrics.get("forget_heldout_acc"),
            "retain_test_acc": metrics.get("retain_test_acc"),
            "retain_test_balanced_acc": metrics.get("retain_test_balanced_acc"),
            "test_acc": metrics.get("test_acc", metrics.get("test_accuracy")),
            "membership_auc": membership.get("auc"),
            "membership_auc_95ci": [membership.get("auc_low"), membership.get("auc_high")],
            "membership_p_value": membership.get("p_value"),
            "membership_null": membership.get("null"),
            "member_acc": membership.get("member_acc"),
            "nonmember_acc": membership.get("nonmember_acc"),
            "n_members": membership.get("n_members"),
            "n_nonmembers": membership.get("n_nonmembers"),
        },
        "failed_runs": None  # a record from before the check, or a trained model's
        if record.get("failed_runs") is None
        else [{k: f.get(k) for k in ("name", "kind", "reason")} for f in record["failed_runs"]],
        "rechecks": {
            rid: {"passed": g.get("passed"), "failed": g.get("failed", [])}
            for rid, g in (record.get("rechecks") or {}).items()
        },
        "lineage": {
            k: record.get(k)
            for k in (
                "parent",
                "data_version",
                "params_hash",
                "code_commit",
                "core_hash",
                "request_hash",
                "revision_id",
            )
        },
        "artifacts": record.get("artifacts", {}),
        "promotion_history": history or [],
        "audit": None if audit is None else {k: audit.get(k) for k in AUDIT_KEYS},
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """Render the card as markdown (the same content as :func:`card_json`).

    Args:
        card: the card, as :func:`card_json` gives it.

    Returns:
        the ``card.md`` text: what was forgotten, the evidence (gates; accuracies in [0, 1],
        membership AUC with its 95% interval and null, three decimals), the per-example
        audit, rejected runs, re-checked earlier requests, lineage, artifact sha256 and
        promotion history; ending with a newline.
    """
    ev, lin = card["evidence"], card["lineage"]
    lines = [
        f"# Revision card: {card['model']} {card['version'] or '(unregistered)'}",
        "",
        "## What was forgotten and why",
    ]
    requests = card["forgotten"]["requests"]
    if not requests:
        lines.append("Nothing: a trained model (no forget request).")
    inherited = set(card["forgotten"].get("inherited") or [])
    for r in requests:
        lines.append(
            f"- request `{r.get('id')}`: reason **{r.get('reason')}**, selector "
            f"`{json.dumps(r.get('selector', {}), sort_keys=True)}` (identifiers hashed)"
            + (
                "; already forgotten by the parent, not unlearned again (rows in no cohort)"
                if r.get("id") in inherited
                else ""
            )
        )
    counts = card["forgotten"]["counts"]
    if counts:
        lines.append("- cohort sizes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += [
        "",
        "## Evidence",
        f"Gates passed: **{_fmt(ev['gates_passed'])}** (every *required* check passed; "
        "*informative* checks are reported and do not block)",
        "",
    ]
    if card.get("selected"):
        lines += [f"Selected candidate: `{card['selected']}`", ""]
    if ev["caveats"]:
        lines += [
            "**What this pass cannot show** (promotion to production needs `--accept REASON`):",
            *(f"- {c}" for c in ev["caveats"]),
            "",
        ]
    if ev["checks"]:
        lines += ["| check | role | value | bound | outcome |", "|---|---|---|---|---|"]
        for c in ev["checks"]:
            lines.append(
                f"| {c['name']} | {c['role']} | {_fmt(c['value'])} | {_fmt(c['bound'])} "
                f"| {c['status']} |"
            )
        lines.append("")
    low, high = ev["membership_auc_95ci"]
    null = ev["membership_null"] or {}
    lines += [
        f"- forget-train accuracy {_fmt(ev['forget_train_acc'])}; held-out images of the "
        f"forgotten kind {_fmt(ev['forget_heldout_acc'])}; members "
        f"{_fmt(ev['member_acc'])} vs matched held-out {_fmt(ev['nonmember_acc'])}",
        f"- retain-test accuracy {_fmt(ev['retain_test_acc'])}, balanced "
        f"{_fmt(ev['retain_test_balanced_acc'])}; test accuracy {_fmt(ev['test_acc'])}",
        f"- membership attack (rank AUC of the loss, {_fmt(ev['n_members'])} members vs "
        f"{_fmt(ev['n_nonmembers'])} matched held-out rows): {_fmt(ev['membership_auc'])} "
        f"(95% CI {_fmt(low)}-{_fmt(high)}, p {_fmt(ev['membership_p_value'])}); null "
        f"(held-out rows against held-out rows, median and 95% range): "
        f"{_fmt(null.get('median'))} ({_fmt(null.get('low'))}-{_fmt(null.get('high'))})",
        "",
        "## Per-example audit (offline LiRA against reference retrains)",
        *_audit_lines(card.get("audit"), card["model"], card["version"]),
        "",
        "## Runs rejected before evaluation",
        *(
            ["Not recorded (no sweep, or a record older than this check)."]
            if card["failed_runs"] is None
            else [f"- `{f['name']}` ({f['kind']}): {f['reason']}" for f in card["failed_runs"]]
            or ["None: every run of the sweep finished with finite weights."]
        ),
        "",
        "## Earlier requests kept forgotten (re-checked on this model)",
        *(
            [
                f"- `{rid}`: {'pass' if r['passed'] else 'FAIL: ' + ', '.join(r['failed'])}"
                for rid, r in card["rechecks"].items()
            ]
            or ["None carried."]
        ),
        "",
        "## Lineage",
        *(f"- {k}: `{_fmt(v)}`" for k, v in lin.items()),
        "",
        "## Artifacts (sha256)",
        *(f"- `{k}`: `{v}`" for k, v in card["artifacts"].items()),
        "",
        "## Promotion history",
    ]
    history = card["promotion_history"]
    if not history:
        lines.append("Not yet promoted.")
    for h in history:
        lines.append(f"- {h.get('at')}: {h.get('stage')} by {h.get('by')}: {h.get('why')}")
    return "\n".join(lines) + "\n"


def _audit_lines(audit: dict[str, Any] | None, model: Any, version: Any) -> list[str]:
    if not audit:
        return [
            "Not run. `medunlearn audit "
            f"{model} {version or 'VERSION'} --reference-models K` calibrates each forgotten "
            "image against K retrains that never saw it."
        ]
    epochs = f"{audit.get('epochs')} epoch(s)"
    if audit.get("recipe_epochs") not in (None, audit.get("epochs")):
        epochs += f", recipe {audit['recipe_epochs']}"
    return [
        f"**{audit.get('status')}**: {audit.get('verdict')}",
        "",
        f"- {audit.get('n_references')} reference models (seeds "
        f"{', '.join(str(s) for s in audit.get('seeds') or [])}; {epochs}; "
        f"{audit.get('trained_now')} trained for this audit, {audit.get('from_cache')} from "
        f"the cache), {audit.get('n_members')} of {audit.get('n_forget_train')} forgotten "
        f"images (as many as the held-out strata match) vs {audit.get('n_nonmembers')} "
        "matched held-out images",
        f"- LiRA AUC {_fmt(audit.get('auc'))} (p {_fmt(audit.get('auc_p_value'))}), TPR at 5% "
        f"FPR {_fmt(audit.get('tpr_at_5fpr'))}, flagged {_fmt(audit.get('flagged'))} "
        f"(expected {_fmt(audit.get('expected'))} at the nominal 5%) vs "
        f"{_fmt(audit.get('nonmember_flagged'))} matched held-out images (p "
        f"{_fmt(audit.get('flagged_p_value'))})",
        f"- audited {audit.get('audited_at')} in {_fmt(audit.get('seconds'))} s "
        "(`audit.json` next to this card)",
    ]


CARD_FILES = ("card.md", "card.json", "report.html")


def card_files(
    record: dict[str, Any],
    history: list[dict[str, Any]],
    audit: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
    plot_png: bytes | None = None,
) -> dict[str, str]:
    """Render the card's files, written side by side.

    ``card.md``, ``card.json`` and ``report.html`` (the HTML report of
    :func:`medunlearn.revision.report.render_report`).

    Args:
        record: the revision record.
        history: its promotion history.
        audit: its per-example audit, or None.
        validation: the run's validation report (``reports/validation.json`` of the
            revision's folder, see :func:`medunlearn.revision.report.report_inputs`), or None.
        plot_png: the run's trade-off plot (PNG bytes), or None.

    Returns:
        ``{file name: text}`` for each of :data:`CARD_FILES`.
    """
    card = card_json(record, history, audit)
    return {
        "card.md": card_markdown(card),
        "card.json": json.dumps(card, indent=2, sort_keys=True, default=str) + "\n",
        "report.html": render_report(card, validation, plot_png),
    }
