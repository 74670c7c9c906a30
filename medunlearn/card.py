"""The revision card: an audit-ready record of one revision, readable without the code.

A privacy officer or clinical safety reviewer reads ``card.md``; machines read ``card.json``
(the same content). It says what was forgotten and why (reason, counts, the request's hash
and its selector hashed: never raw patient or image ids), the evidence (every gate with its
value, bound and outcome; forget vs held-out accuracy; the membership attack's rank AUC with
its bootstrap 95% interval and the null between two halves of the non-members, see
``medunlearn.mia``), the lineage (parent version, data version, params hash, code commit),
the artifacts' sha256 and the promotion history. Written here because no library has this
record; it is plain JSON and markdown so it diffs in git.
"""

from __future__ import annotations

import json
from typing import Any

from medunlearn.data.manifest import hash_identifier

IDENTIFIER_KEYS = ("patient_ids", "image_ids")


def hashed_selector(selector: dict[str, Any]) -> dict[str, Any]:
    """A request selector with every identifier list replaced by salted hashes."""
    out = dict(selector or {})
    for key in IDENTIFIER_KEYS:
        if key in out:
            out[key] = sorted(hash_identifier(str(v)) for v in out[key])
    return out


def card_json(record: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict:
    """The card's content from a revision record and its promotion history."""
    metrics = record.get("metrics") or {}
    membership = metrics.get("membership") or {}
    return {
        "model": record.get("model"),
        "version": record.get("version"),
        "kind": record.get("kind"),
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
                {k: c.get(k) for k in ("name", "role", "status", "value", "bound", "rule")}
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
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """The card as markdown (the same content as :func:`card_json`)."""
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


def card_files(record: dict[str, Any], history: list[dict[str, Any]]) -> tuple[str, str]:
    """The card's two files' text: (``card.md``, ``card.json``)."""
    card = card_json(record, history)
    return card_markdown(card), json.dumps(card, indent=2, sort_keys=True, default=str) + "\n"
