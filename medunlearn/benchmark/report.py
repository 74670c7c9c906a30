"""Benchmark outputs: the JSON result, a markdown table and two PNG plots per scenario.

Plots are ``matplotlib.figure.Figure`` objects (no pyplot state; saved through the Agg
canvas, files only) built apart from their saving, so a test reads them back. Every method
has one colour in every plot, and titles name the model, the scenario and the request
(``medunlearn.evidence.plotting``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medunlearn.atomic import write_json, write_text, write_with
from medunlearn.evidence.plotting import method_colour, plain_log_axis, plot_title

COLUMNS = (
    ("forget_train_acc", "forget-train"),
    ("forget_heldout_acc", "forget held-out"),
    ("retain_test_acc", "retain-test"),
    ("retain_test_balanced_acc", "retain bal."),
    ("worst_class_recall", "worst recall"),
    ("test_acc", "test"),
    ("mia_auc", "MIA AUC"),
    ("mia_efficacy", "MIA-eff."),
    ("lira_auc", "LiRA AUC"),
)
GAP_COLUMNS = (("avg_gap", "Avg Gap (pp)"),)


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ms(stat: dict[str, float | None], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    if not stat["std"]:
        return _f(stat["mean"], digits)
    return f"{_f(stat['mean'], digits)} ± {_f(stat['std'], digits)}"


def _mean_std(values: list[float | None]) -> dict[str, float | None]:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None}
    mean = sum(xs) / len(xs)
    std = (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5 if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std}


def markdown_table(result: dict[str, Any]) -> str:
    """A scenario's results as a markdown section.

    One row per method (mean ± std over seeds), plus reference, noise-floor and deployed
    rows; then per-class recall, the tuning agreement and the gate calibration.

    Args:
        result: a scenario's result (``medunlearn.benchmark.runner``).

    Returns:
        The markdown text.
    """
    head = [
        "method",
        "setting (tuned on val)",
        *[c[1] for c in COLUMNS],
        "Avg Gap (pp)",
        "val gap (pp)",
        "s",
        "t/retrain",
        "peak MB",
    ]
    request = result["request"]
    noise = result.get("noise_floor") or {"n_references": 0, "rows": []}
    lines = [
        f"### {result['scenario']}" + (" (quick)" if result["quick"] else ""),
        "",
        f"Request `{request['reason']}` "
        + ", ".join(
            f"{k}: {len(v)} id(s)" if k in ("patient_ids", "image_ids") else f"{k}: {v}"
            for k, v in request["selector"].items()
        )
        + (f", fraction {request['fraction']}" if request.get("fraction") else "")
        + f"; cohorts {result['counts']}; seeds {result['seeds']}; retrain reference "
        f"{result['retrain_seconds']:.1f} s (deployed model {result['deployed_train_seconds']:.1f} s); "
        f"{noise['n_references']} more retrains for the noise floor, LiRA and calibration.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    fixed = [
        ("retrain (reference)", result["reference"]),
        ("deployed (no unlearning)", result["deployed"]),
    ]
    for label, row in fixed:
        cells = [label, "", *[_f(row.get(k)) for k, _ in COLUMNS], _f(row.get("avg_gap"), 1)]
        cells += [_f(row.get("val_tuning_gap"), 1), "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    if noise["rows"]:
        cells = [f"retrain x{noise['n_references']} (noise floor)", "other seeds"]
        cells += [_ms(_mean_std([r.get(k) for r in noise["rows"]])) for k, _ in COLUMNS]
        cells += [
            _ms(noise["avg_gap"], 1),
            _ms(_mean_std([r.get("val_tuning_gap") for r in noise["rows"]]), 1),
        ]
        cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    for method, s in result["summary"].items():
        setting = ", ".join(f"{k}={v}" for k, v in s["setting"].items()) or "defaults"
        cells = [
            method,
            setting,
            *[_ms(s[k]) for k, _ in COLUMNS],
            _ms(s["avg_gap"], 1),
            _f(s["val_tuning_gap"], 1),
            _ms(s["seconds"], 1),
            _ms(s["time_ratio"], 3),
            _f(s["peak_mb"]["mean"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    best = best_method(result)
    if best:
        lines += ["", f"Lowest mean Avg Gap: **{best}**."]
    check = result.get("pool_check") or {}
    if check.get("excluded"):
        lines += [
            "",
            f"Non-member pool: validation rows only; the test split is shifted from val "
            f"(deployed model, label-matched AUC {check['auc_val_vs_test']:.3f}, p "
            f"{check['p_value']:.2g}).",
        ]
    elif "auc_val_vs_test" in check:
        lines += [
            "",
            f"Non-member pool: val + test (val vs test AUC {check['auc_val_vs_test']:.3f}, "
            f"p {check['p_value']:.2g}: no material shift).",
        ]
    lines += _recall_table(result)
    agreement = result.get("tuning_agreement") or {}
    if agreement.get("spearman") is not None:
        lines += [
            "",
            f"Tuning agreement: Spearman {agreement['spearman']:.2f} (p {agreement['p_value']:.3g}) "
            f"between the validation tuning gap and the test tuning gap over "
            f"{agreement['n_methods']} methods.",
        ]
    lines += calibration_lines(result.get("calibration"))
    return "\n".join(lines) + "\n"


def _recall_table(result: dict[str, Any]) -> list[str]:
    """Retain-test recall per class (mean over seeds), one row per model."""
    rows: list[tuple[str, dict[str, float]]] = []
    for label, row in (
        ("retrain (reference)", result["reference"]),
        ("deployed", result["deployed"]),
    ):
        rows.append((label, row.get("retain_test_recall") or {}))
    for method in result["summary"]:
        recalls = [
            r["metrics"].get("retain_test_recall") or {}
            for r in result["runs"]
            if r["method"] == method
        ]
        classes = sorted({c for rec in recalls for c in rec})
        rows.append(
            (method, {c: _mean_std([rec.get(c) for rec in recalls])["mean"] for c in classes})
        )
    classes = sorted({c for _, rec in rows for c in rec})
    if not classes:
        return []
    lines = ["", "Retain-test recall per class:", "", "| model | " + " | ".join(classes) + " |"]
    lines.append("|" + "---|" * (len(classes) + 1))
    for label, rec in rows:
        lines.append(f"| {label} | " + " | ".join(_f(rec.get(c), 2) for c in classes) + " |")
    return lines


def calibration_lines(calibration: dict[str, Any] | None) -> list[str]:
    """The gate calibration as a table: refusals of retrains, detections of memorised models.

    Args:
        calibration: the scenario's ``calibration`` (``medunlearn.benchmark.calibration``),
            or None.

    Returns:
        Markdown lines (none without a calibration).
    """
    if not calibration:
        return []
    labels = {
        "deployed": "deployed model (no unlearning)",
        "retrain": "retrain references (should pass)",
        "memorised": f"memorised (+{calibration['extra_epochs']} passes over the cohort)",
        "single_retrain": "one-image request, retrain (should pass)",
        "single_memorised": "one-image request, memorised",
    }
    lines = [
        "",
        f"Gate calibration (`{calibration['reason']}` profile):",
        "",
        "| model | n | passed | refused | refused on membership | median MIA AUC | "
        "median LiRA AUC | underpowered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, label in labels.items():
        s = calibration["summary"].get(kind) or {"n": 0}
        if not s["n"]:
            continue
        lines.append(
            f"| {label} | {s['n']} | {s['passed']} | {s['refused']} | {s['privacy_refused']} | "
            f"{_f(s['median_auc'])} | {_f(s.get('median_lira_auc'))} | {s['underpowered']} |"
        )
    return lines


def best_method(result: dict[str, Any], exclude: tuple[str, ...] = ("retrain",)) -> str | None:
    """The method with the lowest mean Avg Gap to the retrain reference.

    Args:
        result: a scenario's result (``summary`` per method, ``avg_gap`` in percentage points).
        exclude: methods not ranked.

    Returns:
        The method's name, or None when no method has an Avg Gap.
    """
    scored = {
        m: s["avg_gap"]["mean"]
        for m, s in result["summary"].items()
        if m not in exclude and s["avg_gap"]["mean"] is not None
    }
    return min(scored, key=scored.get) if scored else None


def _title(result: dict[str, Any], subject: str) -> str:
    """The benchmark's model (architecture; no registry version) and request."""
    model = (result.get("model") or {}).get("name") or "model"
    request = result.get("request") or {}
    return plot_title(
        model,
        f"(benchmark {result['scenario']}{', quick' if result.get('quick') else ''})",
        request.get("reason"),
        request.get("hash"),
        subject,
    )


def _legend_outside(ax: Any) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def methods_figure(result: dict[str, Any]) -> Any:
    """Forget-train vs retain-test accuracy, one point per method and seed.

    Each method is in its fixed colour (``medunlearn.evidence.plotting.method_colour``);
    the retrain reference a black star, the deployed model a grey cross. Methods are
    named in a legend beside the axes, not on the points.

    Args:
        result: a scenario's result (``runs``, ``reference``, ``deployed``, ``scenario``,
            ``model``, ``request``); accuracies in [0, 1].

    Returns:
        A ``matplotlib.figure.Figure``; each method's points carry ``gid`` ``method:<name>``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(r["method"] for r in result["runs"]))
    for method in methods:
        runs = [r for r in result["runs"] if r["method"] == method]
        ax.scatter(
            [r["metrics"]["forget_train_acc"] or 0 for r in runs],
            [r["metrics"]["retain_test_acc"] or 0 for r in runs],
            color=method_colour(method),
            label=method,
            s=36,
            alpha=0.85,
            gid=f"method:{method}",
        )
    ref, dep = result["reference"], result["deployed"]
    ax.scatter(
        [ref["forget_train_acc"]],
        [ref["retain_test_acc"]],
        marker="*",
        s=260,
        color=method_colour("retrain"),
        label="retrain reference",
        zorder=5,
        gid="reference",
    )
    ax.scatter(
        [dep["forget_train_acc"]],
        [dep["retain_test_acc"]],
        marker="X",
        s=120,
        color=method_colour("deployed"),
        label="deployed",
        zorder=5,
        gid="deployed",
    )
    ax.set_xlabel("forget-train accuracy")
    ax.set_ylabel("retain-test accuracy")
    ax.set_title(
        _title(result, "forgetting vs retention (one point per method and seed)"), fontsize=9
    )
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return fig


def time_gap_figure(result: dict[str, Any]) -> Any:
    """Unlearning time / retrain time vs Avg Gap to the retrain, per method.

    The time ratio is on a log axis with plain decimal ticks; the Avg Gap in percentage
    points, mean ± std over seeds. Methods are in their fixed colours, named in a legend;
    the dashed line marks a tenth of the retrain's time.

    Args:
        result: a scenario's result (``summary`` per method: ``time_ratio`` and ``avg_gap``
            as ``{"mean", "std"}``).

    Returns:
        A ``matplotlib.figure.Figure``; each method's marker carries ``gid`` ``method:<name>``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    ratios = []
    for method, s in result["summary"].items():
        x, y = s["time_ratio"]["mean"], s["avg_gap"]["mean"]
        if x is None or y is None or x <= 0:
            continue
        ratios.append(x)
        bars = ax.errorbar(
            x,
            y,
            yerr=s["avg_gap"]["std"] or 0,
            fmt="o",
            capsize=3,
            color=method_colour(method),
            label=method,
        )
        bars.lines[0].set_gid(f"method:{method}")
    ax.axvline(0.1, color="grey", ls="--", lw=0.8, label="0.1 x retrain time")
    ax.set_xscale("log")
    if ratios:  # the 0.1 line and every point with a margin, on whole decades
        low = min([*ratios, 0.1]) / 1.3
        high = max([*ratios, 0.1]) * 1.3
        ax.set_xlim(10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high)))
    plain_log_axis(ax.xaxis)
    ax.set_xlabel("unlearning wall time / retrain wall time (log scale)")
    ax.set_ylabel("Avg Gap to retrain, percentage points (lower is better)")
    ax.set_title(_title(result, "cost vs closeness to retraining"), fontsize=9)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return fig


def plot_tradeoff(result: dict[str, Any], path: Path) -> None:
    """Save :func:`methods_figure` as a PNG.

    Args:
        result: a scenario's result.
        path: the PNG file (written atomically).
    """
    _save(methods_figure(result), path)


def plot_time_gap(result: dict[str, Any], path: Path) -> None:
    """Save :func:`time_gap_figure` as a PNG.

    Args:
        result: a scenario's result.
        path: the PNG file (written atomically).
    """
    _save(time_gap_figure(result), path)


def _save(fig: Any, path: Path) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``<scenario>.json``, ``.md``, ``_tradeoff.png`` and ``_time_gap.png``.

    Args:
        result: a scenario's result.
        out_dir: the folder they go to.

    Returns:
        Their paths by kind: ``json``, ``markdown``, ``tradeoff``, ``time_gap``.
    """
    out_dir = Path(out_dir)
    name = result["scenario"]
    paths = {
        "json": out_dir / f"{name}.json",
        "markdown": out_dir / f"{name}.md",
        "tradeoff": out_dir / f"{name}_tradeoff.png",
        "time_gap": out_dir / f"{name}_time_gap.png",
    }
    write_json(paths["json"], result)
    write_text(paths["markdown"], markdown_table(result))
    plot_tradeoff(result, paths["tradeoff"])
    plot_time_gap(result, paths["time_gap"])
    return paths
