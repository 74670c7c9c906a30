"""The plots read back from their matplotlib figures (issue 28): one colour per method in
every plot, names in a legend rather than on the points, plain ticks on the log time axis,
and titles that name the model, the version and the request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.colors import to_hex, to_rgba
from matplotlib.figure import Figure

from medunlearn.benchmark.report import methods_figure, time_gap_figure
from medunlearn.evidence.plotting import METHOD_COLOURS, method_colour, plain_number
from medunlearn.revision.report import candidates_figure as revision_figure
from medunlearn.revision.report import revision_title
from medunlearn.unlearn.methods import METHODS

PSG_GREEN = "#2ca02c"  # the table's colour for psg, written out as the expected value
SCRUB_BROWN = "#8c564b"


def bench_result(methods: list[str], ratios: dict[str, float]) -> dict:
    """A benchmark result with just what the figures read (known values)."""
    return {
        "scenario": "demo_consent_withdrawal",
        "quick": False,
        "model": {"name": "allcnn", "kwargs": {"width": 0.25}},
        "request": {"reason": "consent_withdrawal", "hash": "647373cd9d5c3695"},
        "runs": [
            {"method": m, "metrics": {"forget_train_acc": 0.1 * i, "retain_test_acc": 0.9}}
            for i, m in enumerate(methods)
            for _ in range(2)  # two seeds
        ],
        "reference": {"forget_train_acc": 0.0, "retain_test_acc": 0.95},
        "deployed": {"forget_train_acc": 1.0, "retain_test_acc": 0.97},
        "summary": {
            m: {
                "time_ratio": {"mean": ratios.get(m, 0.5), "std": 0.0},
                "avg_gap": {"mean": 2.0 + i, "std": 0.5},
            }
            for i, m in enumerate(methods)
        },
    }


def by_gid(fig: Figure) -> dict[str, object]:
    ax = fig.axes[0]
    return {a.get_gid(): a for a in [*ax.collections, *ax.lines] if a.get_gid()}


def face(artist) -> str:
    return to_hex(artist.get_facecolor()[0])


def edge(artist) -> str:
    return to_hex(artist.get_edgecolor()[0])


def test_every_method_has_its_own_fixed_colour() -> None:
    for name in METHODS:  # no method of the package falls back to a spare colour
        assert name in METHOD_COLOURS, name
    colours = [METHOD_COLOURS[m] for m in (*METHODS, "swap", "interpolate", "deployed")]
    assert len(set(colours)) == len(colours)
    # a name the table lacks gets the same colour in another process (no hash seed, no
    # order of first use), and two such names need not share one
    import subprocess
    import sys

    code = "from medunlearn.evidence.plotting import method_colour as c; print(c('future_method'))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).parents[1],
    ).stdout.strip()
    assert other == method_colour("future_method")
    assert method_colour("future_method") not in colours


def test_a_method_keeps_its_colour_across_plots_with_other_methods() -> None:
    first = methods_figure(bench_result(["psg", "scrub", "finetune"], {}))
    second = methods_figure(bench_result(["salun", "l1_sparse", "scrub", "psg"], {}))
    a, b = by_gid(first), by_gid(second)
    assert face(a["method:psg"]) == face(b["method:psg"]) == PSG_GREEN
    assert face(a["method:scrub"]) == face(b["method:scrub"]) == SCRUB_BROWN
    gaps = time_gap_figure(bench_result(["scrub", "psg"], {"scrub": 0.3, "psg": 0.15}))
    lines = by_gid(gaps)
    assert to_hex(lines["method:psg"].get_color()) == PSG_GREEN
    assert to_hex(lines["method:scrub"].get_color()) == SCRUB_BROWN
    # the revision's candidates: two psg runs share psg's colour; a swap gets the swap colour
    rows = [
        {"candidate": "psg-a", "method": "psg", "passed": True, "selected": True},
        {"candidate": "psg-b", "method": "psg", "passed": False, "selected": False},
        {"candidate": "swap", "method": "swap", "passed": True, "selected": False},
    ]
    rows = [{**r, "forget_train_acc": 0.1, "retain_test_acc": 0.9} for r in rows]
    revision = by_gid(revision_figure(rows, {"forget_train_acc": 1.0}, "t"))
    assert edge(revision["candidate:psg-a"]) == edge(revision["candidate:psg-b"]) == PSG_GREEN
    assert face(revision["candidate:psg-a"]) == PSG_GREEN  # passed: filled
    hollow = revision["candidate:psg-b"].get_facecolor()  # failed: no fill
    assert len(hollow) == 0 or to_rgba(hollow[0])[3] == 0
    assert edge(revision["candidate:swap"]) == METHOD_COLOURS["swap"]


def test_names_are_in_the_legend_not_on_the_points() -> None:
    methods = ["psg", "scrub", "neggrad_plus"]
    for fig in (
        methods_figure(bench_result(methods, {})),
        time_gap_figure(bench_result(methods, {"psg": 0.1, "scrub": 0.12, "neggrad_plus": 0.11})),
    ):
        ax = fig.axes[0]
        assert list(ax.texts) == []  # no per-point annotation to overprint
        labels = {t.get_text() for t in ax.get_legend().get_texts()}
        assert set(methods) <= labels


def test_the_time_ratio_axis_has_plain_tick_labels() -> None:
    # ratios within one decade: matplotlib's default labels the minor ticks 2x10^-1 etc.
    fig = time_gap_figure(bench_result(["psg", "scrub"], {"psg": 0.15, "scrub": 0.3}))
    fig.draw_without_rendering()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    shown = [
        (t.get_loc(), t.label1.get_text())
        for t in [*ax.xaxis.get_major_ticks(), *ax.xaxis.get_minor_ticks()]
        if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high
    ]
    assert {text for _, text in shown} >= {"0.1", "0.2", "0.5"}
    for loc, text in shown:
        assert float(text) == pytest.approx(loc) and "10^" not in text and "times" not in text
    # the same axis without the project's formatter shows what the test guards against
    plain = Figure()
    axis = plain.add_subplot()
    axis.plot([0.15, 0.3], [1, 2])
    axis.set_xscale("log")
    axis.set_xlim(0.12, 0.35)
    plain.draw_without_rendering()
    default = [t.label1.get_text() for t in axis.xaxis.get_minor_ticks() if t.label1.get_text()]
    assert any("times" in text for text in default)


@pytest.mark.parametrize(
    ("value", "text"), [(0.2, "0.2"), (0.05, "0.05"), (1.0, "1"), (10.0, "10"), (1e-4, "0.0001")]
)
def test_plain_number(value, text) -> None:
    assert plain_number(value) == text


def test_titles_name_model_version_and_request() -> None:
    rows = [
        {
            "candidate": "psg-a",
            "method": "psg",
            "forget_train_acc": 0.0,
            "retain_test_acc": 0.9,
            "passed": True,
            "selected": True,
        }
    ]
    deployed = {"forget_train_acc": 1.0, "retain_test_acc": 0.95}
    made = revision_figure(
        rows, deployed, revision_title("classifier", "v1.3.0", "consent_withdrawal", "647373cd9d")
    )
    assert made.axes[0].get_title() == (
        "classifier v1.3.0 · request consent_withdrawal 647373cd\n"
        "candidates: forget-train vs retain-test accuracy"
    )
    unregistered = revision_figure(
        rows, deployed, revision_title("classifier", None, "class_retirement", "a69c833aff")
    )
    assert (
        unregistered.axes[0]
        .get_title()
        .startswith("classifier unregistered · request class_retirement a69c833a\n")
    )
    result = bench_result(["psg"], {"psg": 0.2})
    for fig in (methods_figure(result), time_gap_figure(result)):
        first = fig.axes[0].get_title().splitlines()[0]
        assert first == (
            "allcnn (benchmark demo_consent_withdrawal) · request consent_withdrawal 647373cd"
        )
