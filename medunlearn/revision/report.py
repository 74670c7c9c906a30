"""What a reviewer reads about one revision.

Its HTML report, its trade-off figure, and the split of the run's metrics into DVC headline
figures and details.

- :func:`render_report` gives ``report.html``, written next to ``card.md``/``card.json`` by
  :func:`medunlearn.revision.card.card_files`: the card (model, version, parent, request,
  counts, selected candidate), every gate with its value, bound, outcome and caveat, the
  Great Expectations results of the run's validation step (``tasks/validate_data.py``), and
  the candidates' trade-off plot. One self-contained file: CSS inline, the plot a base64
  ``data:`` URI, and a Content-Security-Policy that lets the page load nothing else, so it
  opens offline, from an e-mail attachment or a Prefect link artifact alike. It never
  shows an identifier, raw or hashed: selectors are summarised by count and the
  validation's example rows are left out.
- :func:`candidates_figure` builds the candidates' plot (a ``matplotlib.figure.Figure``: no
  pyplot state, safe in the flow's threads) with the project's fixed method colours and a
  title naming model, version and request (``medunlearn.evidence.plotting``).
- :func:`headline_metrics` / :func:`metrics_details`: ``dvc metrics show`` reads only the
  headline (:data:`HEADLINE_LEAVES`, about 15 figures); everything else goes to a details
  JSON that DVC tracks as a plain output.

The HTML is built with ``html.escape`` and string joins rather than a template engine:
Jinja2 is installed here only as a dependency of Prefect, which the core must not import,
so using it would add an undeclared dependency to the core for a page of fixed layout.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from medunlearn.data.request import IDENTIFIER_KEYS
from medunlearn.evidence.plotting import method_colour, plot_title

# the run's report files as the flow copies them into a revision's folder (``reports/``)
DEFAULT_REPORT_NAMES = {"validation": "validation.json", "tradeoff_png": "tradeoff.png"}

HEADLINE_SCALARS = ("passed", "selected", "revision_id", "request", "reason")
HEADLINE_FIGURES = (
    "forget_train_acc",
    "forget_heldout_acc",
    "retain_test_acc",
    "test_acc",
    "membership_auc",
)
# the headline file's leaves, dotted as ``dvc metrics show`` prints them; ``candidate`` is
# the selected candidate (its figures null when none passed), ``candidate.avg_gap`` is
# there only when the run measured one (against a retrain reference)
HEADLINE_LEAVES = (
    *HEADLINE_SCALARS,
    *(f"candidate.{k}" for k in HEADLINE_FIGURES),
    *(f"deployed.{k}" for k in HEADLINE_FIGURES),
)
OPTIONAL_HEADLINE_LEAVES = ("candidate.avg_gap",)
# top-level keys of the full metrics that only the headline keeps (``request``, the hash,
# stays in both so a details file names its run)
HEADLINE_ONLY = ("passed", "selected", "revision_id", "reason")


def _figures(metrics: dict[str, Any] | None) -> dict[str, Any]:
    m = metrics or {}
    out = {k: m.get(k) for k in HEADLINE_FIGURES if k != "membership_auc"}
    out["membership_auc"] = (m.get("membership") or {}).get("auc")
    return out


def headline_metrics(full: dict[str, Any]) -> dict[str, Any]:
    """Pick the figures ``dvc metrics show`` reads.

    The figures ``dvc metrics show`` reads: :data:`HEADLINE_LEAVES` (plus
    ``candidate.avg_gap`` when the selected candidate has one).

    Args:
        full: the run's metrics as ``tasks/write_revision_report.py`` builds them (keys
            ``passed``, ``selected``, ``revision_id``, ``request``, ``reason``,
            ``selected_metrics`` and ``deployed``: ``UnlearnMetrics.to_dict()`` subsets,
            accuracies in [0, 1]).

    Returns:
        ``{passed, selected, revision_id, request, reason, candidate: {...}, deployed:
        {...}}``; the figures are accuracies in [0, 1] and the membership attack's rank AUC.
    """
    selected = full.get("selected_metrics")
    candidate = _figures(selected)
    if selected and selected.get("avg_gap") is not None:
        candidate["avg_gap"] = selected["avg_gap"]  # percentage points
    return {
        **{k: full.get(k) for k in HEADLINE_SCALARS},
        "candidate": candidate,
        "deployed": _figures(full.get("deployed")),
    }


def metrics_details(full: dict[str, Any]) -> dict[str, Any]:
    """Keep everything of the run's metrics but the headline's own scalars.

    Everything of the run's metrics but the headline's own scalars: the full deployed and
    selected metrics, both gate results, parity, counts, caveats, failed runs, timings.

    Args:
        full: as for :func:`headline_metrics`.

    Returns:
        ``full`` without :data:`HEADLINE_ONLY` (``request``, the hash, is kept).
    """
    return {k: v for k, v in full.items() if k not in HEADLINE_ONLY}


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to its leaves by dotted path.

    A nested dict's leaves by dotted path, as ``dvc metrics show`` flattens it (a list is
    one leaf, an empty dict none).

    Args:
        tree: a JSON-ready value.
        prefix: the path so far.

    Returns:
        ``{"a.b": value}`` for every non-dict value under ``tree``.
    """
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def report_inputs(folder: Path, record: dict[str, Any]) -> tuple[dict | None, bytes | None]:
    """Find the validation report and the trade-off PNG of a revision's folder.

    The validation report and the trade-off PNG of a revision's folder, where the flow
    copied them (``reports/<name>``, names from the record's ``maintain.reports`` params).

    Args:
        folder: the revision's files (staged, or ``models/<name>/<version>/``).
        record: its revision record.

    Returns:
        ``(validation JSON, PNG bytes)``, each None when absent or unreadable (a trained
        model's revision, files not pulled from the DVC remote).
    """
    configured = (((record.get("params") or {}).get("maintain") or {}).get("reports")) or {}
    names = {k: Path(configured.get(k) or v).name for k, v in DEFAULT_REPORT_NAMES.items()}
    validation: dict | None = None
    try:
        validation = json.loads((Path(folder) / "reports" / names["validation"]).read_text())
    except (OSError, ValueError):
        validation = None
    try:
        png: bytes | None = (Path(folder) / "reports" / names["tradeoff_png"]).read_bytes()
    except OSError:
        png = None
    return validation, png


def short_name(name: str, width: int = 28) -> str:
    """A candidate's name for a legend, at most ``width`` characters.

    The whole name is in the report's table.

    Args:
        name: the candidate's name (``psg[exclude_own_label=True,...]``).
        width: the most characters kept.

    Returns:
        ``name``, or its first ``width - 1`` characters and an ellipsis.
    """
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def candidates_figure(rows: list[dict[str, Any]], deployed: dict[str, Any], title: str) -> Any:
    """The candidates' forget-train vs retain-test accuracy, coloured by method.

    Filled marker: the candidate passed its gates; hollow: it failed; a star: the selected
    one; a second candidate of one method gets the next marker shape. Every point is named
    in the legend (outside the axes, so no label covers a point); each point's ``gid`` is
    ``candidate:<name>`` (``deployed`` for the deployed model) for a reader of the figure.

    Args:
        rows: one per candidate: ``candidate`` (name), ``method`` (its method, or the
            composed kind ``swap``/``interpolate``), ``forget_train_acc`` and
            ``retain_test_acc`` (in [0, 1]; None drawn at 0), ``passed``, ``selected``.
        deployed: the deployed model's ``forget_train_acc`` and ``retain_test_acc``.
        title: the figure's title (:func:`medunlearn.evidence.plotting.plot_title`).

    Returns:
        A ``matplotlib.figure.Figure`` (save it with ``fig.savefig``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    shapes = ("o", "s", "^", "D", "v", "P", "h")
    used: dict[str, int] = {}
    for r in rows:
        method = str(r.get("method") or r["candidate"])
        nth = used.get(method, 0)
        used[method] = nth + 1
        colour = method_colour(method)
        notes = [method] + (["selected"] if r["selected"] else [])
        notes += [] if r["passed"] else ["fails gates"]
        ax.scatter(
            [r["forget_train_acc"] or 0],
            [r["retain_test_acc"] or 0],
            marker="*" if r["selected"] else shapes[nth % len(shapes)],
            s=240 if r["selected"] else 60,
            facecolors=colour if r["passed"] else "none",
            edgecolors=colour,
            linewidths=1.5,
            label=f"{short_name(r['candidate'])} ({', '.join(notes)})",
            gid=f"candidate:{r['candidate']}",
            zorder=4 if r["selected"] else 3,
        )
    ax.scatter(  # hollow and on top: a candidate at the deployed model's point stays seen
        [deployed.get("forget_train_acc") or 0],
        [deployed.get("retain_test_acc") or 0],
        marker="s",
        s=160,
        facecolors="none",
        edgecolors=method_colour("deployed"),
        linewidths=1.2,
        label="deployed model",
        gid="deployed",
        zorder=5,
    )
    ax.set_xlabel("forget-train accuracy")
    ax.set_ylabel("retain-test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(
        fontsize=7,
        title="filled: gates pass · hollow: fail · star: selected",
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    ax.grid(alpha=0.3)
    return fig


def revision_title(
    model: str | None, version: str | None, reason: str | None, request_hash: str | None
) -> str:
    """The trade-off plot's title for a revision (see :func:`candidates_figure`).

    Args:
        model: the registered model's name.
        version: the version being made, or None (``unregistered``).
        reason: the request's reason.
        request_hash: the request's hash.

    Returns:
        The two-line title.
    """
    return plot_title(
        model, version, reason, request_hash, "candidates: forget-train vs retain-test accuracy"
    )


# --------------------------------------------------------------------------- the HTML report

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#17652b;font-weight:600}.fail{color:#a4161a;font-weight:600}
.na{color:#666}.caveat{color:#8a5300}.muted{color:#666;font-size:.9rem}
.banner{padding:.5rem .8rem;border-radius:4px;margin:.8rem 0}
.banner.pass{background:#e6f4ea}.banner.fail{background:#fde8e8}
.banner.caveat{background:#fff4e0}
img{max-width:100%;border:1px solid #ddd}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _row(cells: list[str], attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(cells) + "</tr>"


def _td(value: Any, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f"<td{klass}>{_e(_fmt(value))}</td>"


def _th(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"


def own_request(card: dict[str, Any]) -> dict[str, Any] | None:
    """Find the request this revision was made for.

    The request this revision was made for: the one whose id is its ``request_hash``,
    else the last listed (with the forget ledger on, ids are ledger ids and the revision's
    own request comes after the earlier ones it keeps forgotten), or None for a trained
    model.

    Args:
        card: :func:`medunlearn.revision.card.card_json`'s content.

    Returns:
        The request entry (``id``, ``reason``, ``selector``, ...), or None.
    """
    requests = card["forgotten"]["requests"]
    wanted = card["lineage"].get("request_hash")
    for r in requests:
        if wanted is not None and r.get("id") == wanted:
            return r
    return requests[-1] if requests else None


def report_title(card: dict[str, Any]) -> str:
    """``Revision report: <model> <version> · request <reason> <request hash>``.

    Args:
        card: the card's content.

    Returns:
        The page's title (plain text).
    """
    request = own_request(card)
    named = (
        f"request {request.get('reason')} {card['lineage'].get('request_hash') or request.get('id')}"
        if request
        else "no forget request (a trained model)"
    )
    return f"Revision report: {card['model']} {card['version'] or 'unregistered'} · {named}"


def _selector(selector: dict[str, Any] | None) -> str:
    """A selector without identifiers: identifier lists by their count only."""
    parts = []
    for key, value in sorted((selector or {}).items()):
        if key in IDENTIFIER_KEYS:
            parts.append(f"{key}: {len(value or [])} id(s)")
        else:
            parts.append(f"{key}: {json.dumps(value, sort_keys=True, default=str)}")
    return "; ".join(parts) or "(empty)"


def _card_section(card: dict[str, Any]) -> str:
    lin, ev = card["lineage"], card["evidence"]
    request = own_request(card)
    facts = [
        ("model", card["model"]),
        ("version", card["version"] or "unregistered"),
        ("kind", card.get("kind")),
        ("parent version", lin.get("parent")),
        ("request reason", request.get("reason") if request else None),
        ("request hash", lin.get("request_hash") or (request or {}).get("id")),
        ("selected candidate", card.get("selected")),
        ("revision id", lin.get("revision_id")),
        ("gates passed", ev.get("gates_passed")),
        ("deployed model passes the same gates", ev.get("deployed_gates_passed")),
        ("data version", lin.get("data_version")),
        ("params hash", lin.get("params_hash")),
        ("code commit", lin.get("code_commit")),
    ]
    out = ['<h2 id="card">Card</h2>', '<table class="facts">']
    out += [_row([f"<th>{_e(k)}</th>", _td(v)], f' data-fact="{_e(k)}"') for k, v in facts]
    out.append("</table>")
    requests = card["forgotten"]["requests"]
    inherited = set(card["forgotten"].get("inherited") or [])
    if requests:
        out += ["<h3>Requests kept forgotten by this version</h3>", "<table>"]
        out.append(_th("request", "reason", "selector (identifiers counted, never shown)", "note"))
        for r in requests:
            note = "already forgotten by the parent" if r.get("id") in inherited else ""
            if r is request:
                note = "this revision's request"
            out.append(
                _row(
                    [
                        _td(r.get("id")),
                        _td(r.get("reason")),
                        _td(_selector(r.get("selector"))),
                        _td(note),
                    ]
                )
            )
        out.append("</table>")
    counts = card["forgotten"].get("counts") or {}
    if counts:
        out += ["<h3>Cohort sizes (images)</h3>", '<table class="counts">', _th("cohort", "images")]
        out += [_row([_td(k), _td(v, "num")]) for k, v in counts.items()]
        out.append("</table>")
    return "\n".join(out)


def check_caveat(check: dict[str, Any], caveats: list[str]) -> str:
    """Say what one gate check's outcome cannot show.

    What one gate check's outcome cannot show: the card's caveat naming it
    (``underpowered: <name>: ...``), else its own underpowered note, else empty.

    Args:
        check: one of the card's checks (``name``, ``underpowered``, ``detail``).
        caveats: the card's caveats (``medunlearn.revision.candidates.evidence_caveats``).

    Returns:
        The caveat text, or ``""``.
    """
    named = [c for c in caveats if c.startswith(f"underpowered: {check.get('name')}:")]
    if named:
        return "; ".join(named)
    if check.get("underpowered"):
        detail = str(check.get("detail") or "")
        notes = [
            p.strip().removeprefix("underpowered: ")
            for p in detail.split(";")
            if p.strip().startswith(("underpowered", "cannot detect"))
        ]
        return "underpowered: " + ("; ".join(notes) or "the bound alone decides")
    return ""


def _gates_section(card: dict[str, Any]) -> str:
    ev = card["evidence"]
    passed = ev.get("gates_passed")
    caveats = [str(c) for c in ev.get("caveats") or []]
    verdict = "pass" if passed else "fail"
    out = [
        '<h2 id="gates">Gates</h2>',
        f'<p class="banner {verdict}" id="gates-verdict">Gates '
        f"{'passed' if passed else 'not passed'}: every <em>required</em> check must pass; "
        "<em>informative</em> checks are reported and do not block.</p>",
    ]
    if caveats:
        out.append(
            '<div class="banner caveat" id="caveats"><strong>What this pass cannot show</strong> '
            "(promotion to production needs <code>--accept REASON</code>):<ul>"
            + "".join(f"<li>{_e(c)}</li>" for c in caveats)
            + "</ul></div>"
        )
    checks = ev.get("checks") or []
    if not checks:
        out.append('<p class="muted">No gate checks (a trained model).</p>')
        return "\n".join(out)
    out += [
        '<table id="gate-table">',
        _th("check", "role", "outcome", "value", "threshold", "rule", "caveat", "detail"),
    ]
    for c in checks:
        status = str(c.get("status"))
        cls = {"pass": "pass", "fail": "fail"}.get(status, "na")
        shown = {"pass": "PASS", "fail": "FAIL", "not_applicable": "n/a"}.get(status, status)
        out.append(
            _row(
                [
                    _td(c.get("name")),
                    _td(c.get("role")),
                    f'<td class="outcome {cls}">{_e(shown)}</td>',
                    _td(c.get("value"), "num"),
                    _td(c.get("bound"), "num"),
                    _td(c.get("rule")),
                    f'<td class="caveat">{_e(check_caveat(c, caveats))}</td>',
                    _td(c.get("detail") or ""),
                ],
                f' data-check="{_e(c.get("name"))}"',
            )
        )
    out.append("</table>")
    figures = [
        ("forget-train accuracy", ev.get("forget_train_acc")),
        ("forget held-out accuracy", ev.get("forget_heldout_acc")),
        ("retain-test accuracy", ev.get("retain_test_acc")),
        ("test accuracy", ev.get("test_acc")),
        ("membership attack AUC", ev.get("membership_auc")),
    ]
    out += ['<table class="figures">', _th("figure", "value")]
    out += [_row([_td(k), _td(v, "num")]) for k, v in figures]
    out.append("</table>")
    return "\n".join(out)


def _validation_section(card: dict[str, Any], validation: dict[str, Any] | None) -> str:
    out = ['<h2 id="validation">Data validation (Great Expectations)</h2>']
    if not validation or not isinstance(validation.get("outcomes"), list):
        out.append(
            '<p class="muted" id="validation-missing">The validation results are not available '
            "here (a trained model, or the revision's files were not pulled).</p>"
        )
        return "\n".join(out)
    outcomes = validation["outcomes"]
    n_ok = sum(bool(o.get("success")) for o in outcomes)
    out.append(
        f'<p id="validation-summary">{n_ok} of {len(outcomes)} expectations passed '
        "(each suite in the order it ran: the manifest, then the forget/retain cohorts; "
        "failing rows are named in the run's log, never here).</p>"
    )
    wanted = card["lineage"].get("request_hash")
    if wanted and validation.get("request") not in (None, wanted):
        out.append(
            '<p class="banner fail">These results were written for request '
            f"{_e(validation.get('request'))}, not {_e(wanted)}.</p>"
        )
    out += [
        '<table id="validation-table">',
        _th("suite", "expectation", "column", "success", "observed", "detail"),
    ]
    for o in outcomes:
        ok = bool(o.get("success"))
        out.append(
            _row(
                [
                    _td(o.get("suite")),
                    _td(o.get("expectation")),
                    _td(o.get("column") or ""),
                    f'<td class="success {"pass" if ok else "fail"}">{"pass" if ok else "FAIL"}</td>',
                    _td(o.get("observed")),
                    _td(o.get("detail") or ""),
                ]
            )
        )
    out.append("</table>")
    return "\n".join(out)


def _plot_section(plot_png: bytes | None) -> str:
    out = ['<h2 id="tradeoff">Candidates: forgetting vs retention</h2>']
    if not plot_png:
        out.append(
            '<p class="muted" id="plot-missing">The trade-off plot is not available here.</p>'
        )
        return "\n".join(out)
    data = base64.b64encode(plot_png).decode("ascii")
    out.append(
        f'<img id="tradeoff-plot" alt="candidates: forget-train vs retain-test accuracy" '
        f'src="data:image/png;base64,{data}">'
    )
    return "\n".join(out)


def _more_section(card: dict[str, Any]) -> str:
    out = ['<h2 id="audit">Per-example audit</h2>']
    audit = card.get("audit")
    if audit:
        out.append(
            f"<p><strong>{_e(audit.get('status'))}</strong>: {_e(audit.get('verdict'))} "
            f"(LiRA AUC {_e(_fmt(audit.get('auc')))}, {_e(audit.get('n_references'))} "
            "reference models)</p>"
        )
    else:
        out.append('<p class="muted">Not run (<code>medunlearn audit</code>).</p>')
    out.append('<h2 id="history">Promotion history</h2>')
    out.append(
        '<p class="muted">As of when this report was written; '
        "<code>medunlearn card MODEL VERSION</code> shows it up to now.</p>"
    )
    history = card.get("promotion_history") or []
    if not history:
        out.append('<p class="muted">Not yet promoted.</p>')
    else:
        out += ["<table>", _th("at", "stage", "by", "why")]
        out += [
            _row([_td(h.get("at")), _td(h.get("stage")), _td(h.get("by")), _td(h.get("why"))])
            for h in history
        ]
        out.append("</table>")
    artifacts = card.get("artifacts") or {}
    if artifacts:
        out += ['<h2 id="artifacts">Artifacts (sha256)</h2>', "<table>", _th("file", "sha256")]
        out += [_row([_td(k), f"<td><code>{_e(v)}</code></td>"]) for k, v in artifacts.items()]
        out.append("</table>")
    return "\n".join(out)


def render_report(
    card: dict[str, Any],
    validation: dict[str, Any] | None = None,
    plot_png: bytes | None = None,
) -> str:
    """Render the revision's HTML report.

    The revision's HTML report: one self-contained page (inline CSS, the plot a ``data:``
    URI, nothing loaded from elsewhere), every text escaped.

    Args:
        card: :func:`medunlearn.revision.card.card_json`'s content.
        validation: the validation step's JSON (``{"request", "success", "outcomes": [{suite,
            expectation, column, success, observed, detail, examples}]}``), or None.
        plot_png: the trade-off plot's PNG bytes, or None.

    Returns:
        The HTML document.
    """
    title = report_title(card)
    body = [
        f"<h1>{_e(title)}</h1>",
        '<p class="muted">Written by medunlearn next to <code>card.md</code> and '
        "<code>card.json</code> (the same card); identifiers are never shown.</p>",
        _card_section(card),
        _gates_section(card),
        _validation_section(card, validation),
        _plot_section(plot_png),
        _more_section(card),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
