"""Benchmark outputs: the JSON result, a markdown table and two PNG plots per scenario.

Plots use matplotlib's Agg backend (files only, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medunlearn.atomic import write_json, write_text, write_with

COLUMNS = (
    ("forget_test_acc", "forget-test"),
    ("forget_train_acc", "forget-train"),
    ("retain_test_acc", "retain-test"),
    ("test_acc", "test"),
    ("mia_auc", "MIA AUC"),
    ("mia_efficacy", "MIA-eff."),
    ("avg_gap", "Avg Gap"),
)


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ms(stat: dict[str, float | None], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    if not stat["std"]:
        return _f(stat["mean"], digits)
    return f"{_f(stat['mean'], digits)} ± {_f(stat['std'], digits)}"


def markdown_table(result: dict[str, Any]) -> str:
    """One row per method (mean ± std over seeds), plus the reference and deployed rows."""
    head = [
        "method",
        "setting (tuned on val)",
        *[c[1] for c in COLUMNS],
        "val gap",
        "s",
        "t/retrain",
        "peak MB",
    ]
    lines = [
        f"### {result['scenario']}" + (" (quick)" if result["quick"] else ""),
        "",
        f"Request `{result['request']['reason']}` {result['request']['selector']}"
        + (
            f", fraction {result['request']['fraction']}"
            if result["request"].get("fraction")
            else ""
        )
        + f"; cohorts {result['counts']}; seeds {result['seeds']}; retrain reference "
        f"{result['retrain_seconds']:.1f} s (deployed model {result['deployed_train_seconds']:.1f} s).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, row in (
        ("retrain (reference)", result["reference"]),
        ("deployed (no unlearning)", result["deployed"]),
    ):
        cells = [label, "", *[_f(row[k]) for k, _ in COLUMNS], "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    for method, s in result["summary"].items():
        setting = ", ".join(f"{k}={v}" for k, v in s["setting"].items()) or "defaults"
        cells = [
            method,
            setting,
            *[_ms(s[k]) for k, _ in COLUMNS],
            _f(s["val_avg_gap"]),
            _ms(s["seconds"], 1),
            _ms(s["time_ratio"], 3),
            _f(s["peak_mb"]["mean"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    best = best_method(result)
    if best:
        lines += ["", f"Lowest mean Avg Gap: **{best}**."]
    return "\n".join(lines) + "\n"


def best_method(result: dict[str, Any], exclude: tuple[str, ...] = ("retrain",)) -> str | None:
    scored = {
        m: s["avg_gap"]["mean"]
        for m, s in result["summary"].items()
        if m not in exclude and s["avg_gap"]["mean"] is not None
    }
    return min(scored, key=scored.get) if scored else None


def plot_tradeoff(result: dict[str, Any], path: Path) -> None:
    """Forget-test vs retain-test accuracy, one point per method and seed; retrain a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    methods = list(dict.fromkeys(r["method"] for r in result["runs"]))
    cmap = plt.get_cmap("tab20")
    for i, method in enumerate(methods):
        runs = [r for r in result["runs"] if r["method"] == method]
        ax.scatter(
            [r["metrics"]["forget_test_acc"] or 0 for r in runs],
            [r["metrics"]["retain_test_acc"] or 0 for r in runs],
            color=cmap(i % 20),
            label=method,
            s=36,
            alpha=0.85,
        )
    ref, dep = result["reference"], result["deployed"]
    ax.scatter(
        [ref["forget_test_acc"]],
        [ref["retain_test_acc"]],
        marker="*",
        s=260,
        color="black",
        label="retrain reference",
        zorder=5,
    )
    ax.scatter(
        [dep["forget_test_acc"]],
        [dep["retain_test_acc"]],
        marker="X",
        s=120,
        color="grey",
        label="deployed",
        zorder=5,
    )
    ax.set_xlabel("forget-test accuracy")
    ax.set_ylabel("retain-test accuracy")
    ax.set_title(f"{result['scenario']}: forgetting vs retention")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_time_gap(result: dict[str, Any], path: Path) -> None:
    """Unlearning time / retrain time vs Avg Gap, mean over seeds per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for method, s in result["summary"].items():
        x, y = s["time_ratio"]["mean"], s["avg_gap"]["mean"]
        if x is None or y is None:
            continue
        ax.errorbar(x, y, yerr=s["avg_gap"]["std"] or 0, fmt="o", capsize=3)
        ax.annotate(method, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.axvline(0.1, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("unlearning wall time / retrain wall time (log)")
    ax.set_ylabel("Avg Gap to retrain (lower is better)")
    ax.set_title(f"{result['scenario']}: cost vs closeness to retraining")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``<scenario>.json``, ``.md``, ``_tradeoff.png`` and ``_time_gap.png``."""
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
