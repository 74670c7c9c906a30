"""Leave-one-dataset-out choice of defaults (medunlearn.benchmark.tuning) on a hand-made
table whose right answers are worked out in the comments."""

from __future__ import annotations

import json

import pytest

from medunlearn.benchmark.tuning import (
    choose,
    choose_sweep,
    leave_one_dataset_out,
    rank,
    sweep_outcome,
)

A, B, C = {"lr": 1e-3}, {"lr": 3e-4}, {"lr": 1e-4}
# passes / gap (points) per scenario:
#            s1 (d1)     s2 (d2)     s3 (d3)
#   A       pass 2.0    pass 4.0    FAIL 1.0
#   B       pass 3.0    pass 3.0    pass 9.0
#   C       FAIL 0.5    pass 1.0    pass 1.0
TABLE = {
    ("s1", "A"): (True, 2.0),
    ("s2", "A"): (True, 4.0),
    ("s3", "A"): (False, 1.0),
    ("s1", "B"): (True, 3.0),
    ("s2", "B"): (True, 3.0),
    ("s3", "B"): (True, 9.0),
    ("s1", "C"): (False, 0.5),
    ("s2", "C"): (True, 1.0),
    ("s3", "C"): (True, 1.0),
}
SETTINGS = {"A": A, "B": B, "C": C}


def rows_of(table: dict, settings: dict) -> list[dict]:
    """One tuning row per ``(scenario, setting name) -> (passed, score)`` entry."""
    return [
        {"scenario": s, "setting": settings[k], "passed": ok, "score": g}
        for (s, k), (ok, g) in table.items()
    ]


ROWS = [{**row, "time_ratio": 0.1, "seconds": 1} for row in rows_of(TABLE, SETTINGS)]
DATASETS = {"d1": ["s1"], "d2": ["s2"], "d3": ["s3"]}


def test_rank_puts_passing_everywhere_before_closer_but_failing() -> None:
    # over all three: B passes 3 (mean 5.0); A passes 2 (mean 2.33); C passes 2 (mean 0.83)
    ranked = rank(ROWS, ["s1", "s2", "s3"])
    assert [r[1]["passed"] for r in ranked] == [3, 2, 2]
    assert choose(ROWS, ["s1", "s2", "s3"])["setting"] == B
    assert ranked[1][1]["score"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)  # C before A


def test_choose_refuses_when_no_setting_ran_everywhere() -> None:
    with pytest.raises(ValueError, match="no setting was run on every scenario"):
        choose(ROWS[:1] + ROWS[4:5], ["s1", "s2"])  # A only on s1, B only on s2


def test_sweep_adds_the_setting_that_covers_what_the_first_misses() -> None:
    # on s1+s3: B passes both (mean 6.0) vs A, C pass one each -> B first, covers both;
    # filled with the next by rank: C (1 pass, mean 0.75) before A (1 pass, mean 1.5)
    assert choose_sweep(ROWS, ["s1", "s3"], size=2) == [B, C]
    assert choose_sweep(ROWS, ["s1", "s3"], size=1) == [B]
    # on s1+s2: A and B pass both with mean 3.0 (tie kept in row order: A, then B)
    assert choose_sweep(ROWS, ["s1", "s2"], size=2) == [A, B]
    # on s2+s3: C passes both (mean 1.0) -> C, then B (2 passes, mean 6.0) before A (1 pass)
    assert choose_sweep(ROWS, ["s2", "s3"], size=3) == [C, B, A]


def test_sweep_covers_a_scenario_the_first_setting_misses() -> None:
    # D: best on s1 alone, fails s2; E fails s1, passes s2 -> first D (1 pass, mean 0.5 ties
    # E's 1 pass, mean 2.5 -> D), then E adds s2
    d, e = {"lr": 1.0}, {"lr": 2.0}
    rows = [
        {"scenario": "s1", "setting": d, "passed": True, "score": 0.0, "time_ratio": 0.1},
        {"scenario": "s2", "setting": d, "passed": False, "score": 1.0, "time_ratio": 0.1},
        {"scenario": "s1", "setting": e, "passed": False, "score": 4.0, "time_ratio": 0.1},
        {"scenario": "s2", "setting": e, "passed": True, "score": 1.0, "time_ratio": 0.1},
    ]
    assert choose_sweep(rows, ["s1", "s2"], size=2) == [d, e]


def test_sweep_breaks_a_coverage_tie_by_passes_elsewhere() -> None:
    # G passes s1, s3 (first); s2 is left. E passes s2 (gap 3.0) and s1; F passes s2 only,
    # closer (0.5). Both add s2; E passes more scenarios overall -> E, not F.
    settings = {"G": {"lr": 1.0}, "E": {"lr": 2.0}, "F": {"lr": 3.0}}
    table = {
        ("G", "s1"): (True, 0.0), ("G", "s2"): (False, 5.0), ("G", "s3"): (True, 0.0),
        ("E", "s1"): (True, 3.0), ("E", "s2"): (True, 3.0), ("E", "s3"): (False, 3.0),
        ("F", "s1"): (False, 9.0), ("F", "s2"): (True, 0.5), ("F", "s3"): (False, 9.0),
    }  # fmt: skip
    rows = [
        {"scenario": sc, "setting": settings[k], "passed": p, "score": v, "time_ratio": 0.1}
        for (k, sc), (p, v) in table.items()
    ]
    assert choose_sweep(rows, ["s1", "s2", "s3"], size=2) == [settings["G"], settings["E"]]


def test_sweep_never_takes_a_setting_that_diverged_anywhere() -> None:
    # X passes s2 and s3 with the best scores but diverged (score inf) on s1
    x = {"lr": 3e-3}
    rows = ROWS + [
        {
            "scenario": "s1",
            "setting": x,
            "passed": False,
            "score": float("inf"),
            "time_ratio": None,
        },
        {"scenario": "s2", "setting": x, "passed": True, "score": 0.1, "time_ratio": 0.1},
        {"scenario": "s3", "setting": x, "passed": True, "score": 0.1, "time_ratio": 0.1},
    ]
    assert x not in choose_sweep(rows, ["s1", "s2", "s3"], size=3)
    # on s2+s3 alone X never diverged and is the best
    assert choose_sweep(rows, ["s2", "s3"], size=1) == [x]
    with pytest.raises(ValueError, match="without diverging"):
        choose_sweep([r for r in rows if r["setting"] == x], ["s1", "s2"], size=1)


def test_sweep_outcome_keeps_the_closest_passing_run() -> None:
    # sweep [A, C] on s3: A fails, C passes (1.0) -> passes with C
    out = sweep_outcome(ROWS, [A, C], "s3")
    assert out["passed"] and out["setting"] == C and out["score"] == 1.0
    assert out["seconds"] == 2  # both runs are paid for
    # sweep [C] on s1: fails, reports C's row
    assert sweep_outcome(ROWS, [C], "s1") == {
        "passed": False,
        "score": 0.5,
        "setting": C,
        "seconds": 1.0,
    }


def test_leave_one_dataset_out_never_sees_the_held_out_dataset() -> None:
    out = {e["held_out"]: e for e in leave_one_dataset_out(ROWS, DATASETS, size=1)}
    # held out d3: chosen on s1, s2 -> A (tie with B broken by row order) -> fails on s3
    assert out["d3"]["sweep"] == [A] and out["d3"]["outcome"]["passed"] is False
    # held out d1: chosen on s2, s3 -> C -> fails on s1
    assert out["d1"]["sweep"] == [C] and out["d1"]["outcome"]["passed"] is False
    # held out d2: chosen on s1, s3 -> B -> passes s2 with 3.0
    assert out["d2"]["sweep"] == [B] and out["d2"]["outcome"] == {
        "passed": True,
        "score": 3.0,
        "setting": B,
        "seconds": 1.0,
    }


def test_leave_one_dataset_out_with_a_sweep_of_two_hedges() -> None:
    # held out d3: chosen on s1, s2 -> [A, B]; A fails s3 but B passes (9.0)
    out = {e["held_out"]: e for e in leave_one_dataset_out(ROWS, DATASETS, size=2)}
    assert out["d3"]["sweep"] == [A, B]
    assert out["d3"]["outcome"]["passed"] and out["d3"]["outcome"]["setting"] == B
    # held out d1: chosen on s2, s3 -> [C, B]; C fails s1, B passes with 3.0
    assert out["d1"]["sweep"] == [C, B] and out["d1"]["outcome"]["score"] == 3.0


def test_a_pass_where_the_deployed_model_passes_too_only_breaks_ties() -> None:
    # s1 proves nothing (the deployed model passes it). P passes s1 and s2; Q passes s2 and
    # s3 with a worse mean gap. Counting every pass, P and Q tie on 2 and P's lower gap
    # would win; counting discriminating passes, Q has 2 (s2, s3) and P has 1 (s2).
    P, Q = {"lr": 1.0}, {"lr": 2.0}
    table = {
        ("s1", "P"): (True, 1.0),
        ("s2", "P"): (True, 1.0),
        ("s3", "P"): (False, 1.0),
        ("s1", "Q"): (False, 5.0),
        ("s2", "Q"): (True, 5.0),
        ("s3", "Q"): (True, 5.0),
    }
    rows = [
        {**row, "deployed_passes": row["scenario"] == "s1"}
        for row in rows_of(table, {"P": P, "Q": Q})
    ]
    ranked = rank(rows, ["s1", "s2", "s3"])
    assert [r[1]["passed_discriminating"] for r in ranked] == [2, 1]
    assert choose(rows, ["s1", "s2", "s3"])["setting"] == Q
    assert choose_sweep(rows, ["s1", "s2", "s3"], size=1) == [Q]


def test_rank_and_choose_never_offer_a_setting_that_diverged() -> None:
    # X passes two of three and diverged on the third: without the rule it would rank first
    X = {"lr": 9.0}
    diverging = [
        {"scenario": "s1", "setting": X, "passed": True, "score": 0.1},
        {"scenario": "s2", "setting": X, "passed": True, "score": 0.1},
        {"scenario": "s3", "setting": X, "passed": False, "score": float("inf")},
    ]
    ranked = rank(ROWS + diverging, ["s1", "s2", "s3"])
    assert X not in [json.loads(k) for k, _ in ranked]
    assert choose(ROWS + diverging, ["s1", "s2", "s3"])["setting"] == B


def test_leave_one_out_chooses_only_settings_that_ran_on_the_held_out_dataset() -> None:
    # B (which would be chosen on d1 + d2) has no row on s3: held out d3, the sweep is
    # chosen from A and C (both ran there) instead of failing with a missing row
    rows = [r for r in ROWS if not (r["scenario"] == "s3" and r["setting"] == B)]
    by_held = {e["held_out"]: e for e in leave_one_dataset_out(rows, DATASETS, size=1)}
    assert by_held["d3"]["sweep"] == [A]  # on s1 + s2: A passes 2 (mean 3.0), C passes 1
    assert by_held["d3"]["outcome"]["passed"] is False  # A fails s3
