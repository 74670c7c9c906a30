"""Choosing shipped defaults across datasets: leave-one-dataset-out (issue 26).

The per-reason settings of ``params.yaml`` must hold on data they were not tuned on. The
tuning runs every setting of a grid on several scenarios (one JSON row per run, see
``scripts/tune_defaults.py``); this module turns those rows into a choice:

- a row **passes** when the candidate passes its reason's required gates
  (``medunlearn.evidence.gates``: forgetting, retention, membership, forget-train not raised) on that
  scenario; its **score** is the tuning gap to the scenario's retrain reference in
  percentage points (``medunlearn.evidence.metrics.TUNING_GAP_KEYS``: forget-train, retain-train and
  retain-test accuracy and the membership AUC), lower is better;
- :func:`choose` ranks settings over a set of scenarios by (scenarios passed where the
  untouched deployed model fails the same gates; all scenarios passed; mean score; mean time
  ratio), i.e. a setting that passes everywhere beats a closer one that fails somewhere, and
  a pass that proves nothing (the deployed model passes too) counts only as a tie-break;
- :func:`choose_sweep` greedily adds up to ``size`` settings so that the sweep (a revision
  keeps the best candidate that passes) passes on as many scenarios as possible, then fills
  the remaining slots with the next-ranked settings (a hedge for unseen data: a revision
  pays for ``size`` candidates anyway); a setting that diverged on any scenario (score
  ``inf``: non-finite weights or outputs) is never put in a sweep;
- :func:`leave_one_dataset_out` chooses on every dataset but one and reports the held-out
  dataset's outcome, for each dataset in turn: the estimate of how the rule does on data it
  never saw.

Written by hand: the rule is this project's (gate-first ranking); no library selects
hyperparameters by gate pass across datasets.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def setting_key(setting: dict[str, Any]) -> str:
    """A canonical string of a grid point (sorted keys), the rows' grouping key.

    Args:
        setting: a grid point (JSON-ready settings).

    Returns:
        Its JSON with sorted keys.
    """
    return json.dumps(setting, sort_keys=True)


def _table(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{setting_key: {scenario: row}}``; a later row for the same pair replaces the earlier."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(setting_key(row["setting"]), {})[row["scenario"]] = row
    return out


def rank(
    rows: Iterable[dict[str, Any]], scenarios: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Settings run on every one of ``scenarios`` without diverging, best first.

    Order: more discriminating passes, more passes, lower mean score, lower time ratio. A
    row without ``deployed_passes`` counts as discriminating.

    Args:
        rows: one per (scenario, setting): ``scenario``, ``setting``, ``passed``, ``score``
            (tuning gap, percentage points), ``time_ratio``, optionally
            ``deployed_passes``; a later row for the same pair replaces an earlier one.
        scenarios: the scenarios a setting must have run on.

    Returns:
        ``(setting_key, summary)`` pairs, best first; the summary holds
        ``passed_discriminating`` (scenarios passed where the untouched deployed model fails
        the same gates: a pass that proves something), ``passed`` (all passes), ``score``
        (mean tuning gap, percentage points) and ``time_ratio`` (mean run time over the
        retrain's, or ``None`` when no row has one).
    """
    ranked = []
    for key, by_scenario in _table(rows).items():
        if not all(s in by_scenario for s in scenarios):
            continue
        picked = [by_scenario[s] for s in scenarios]
        if any(diverged(r) for r in picked):
            continue
        ratios = [r["time_ratio"] for r in picked if r.get("time_ratio") is not None]
        summary = {
            "passed_discriminating": sum(
                bool(r["passed"]) and not r.get("deployed_passes", False) for r in picked
            ),
            "passed": sum(bool(r["passed"]) for r in picked),
            "score": statistics.fmean(float(r["score"]) for r in picked),
            "time_ratio": statistics.fmean(ratios) if ratios else None,
        }
        ranked.append((key, summary))
    ranked.sort(
        key=lambda kv: (
            -kv[1]["passed_discriminating"],
            -kv[1]["passed"],
            kv[1]["score"],
            kv[1]["time_ratio"] or 0.0,
        )
    )
    return ranked


def choose(rows: Iterable[dict[str, Any]], scenarios: Sequence[str]) -> dict[str, Any]:
    """The best setting over ``scenarios`` (see :func:`rank`).

    Args:
        rows: one per (scenario, setting): ``scenario``, ``setting``, ``passed``, ``score``
            (tuning gap, percentage points), ``time_ratio``, optionally
            ``deployed_passes``; a later row for the same pair replaces an earlier one.
        scenarios: the scenarios to choose on.

    Returns:
        ``{"setting": grid point, **summary}`` with :func:`rank`'s summary of it.

    Raises:
        ValueError: no setting was run on every scenario without diverging.
    """
    ranked = rank(list(rows), scenarios)
    if not ranked:
        raise ValueError(
            f"no setting was run on every scenario of {list(scenarios)} without diverging"
        )
    key, summary = ranked[0]
    return {"setting": json.loads(key), **summary}


def diverged(row: dict[str, Any]) -> bool:
    """Whether a run failed by divergence.

    Args:
        row: a tuning row (its ``score``).

    Returns:
        True when its score is ``inf`` (non-finite weights or outputs, see
        ``medunlearn.unlearn.methods.Diverged``).
    """
    return float(row["score"]) == float("inf")


def choose_sweep(
    rows: Iterable[dict[str, Any]],
    scenarios: Sequence[str],
    size: int = 2,
    also_run_on: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """A sweep of up to ``size`` settings that passes on as many scenarios as possible.

    First the best by :func:`rank`, then each time the setting that makes the sweep pass on
    the most scenarios not yet covered (ties: the most newly covered scenarios where the
    deployed model fails, the most scenarios passed overall, then the lowest mean score on
    the newly covered ones); once nothing adds coverage, the next settings by :func:`rank`.
    Settings that diverged on any of ``scenarios`` are never chosen.

    Args:
        rows: one per (scenario, setting): ``scenario``, ``setting``, ``passed``, ``score``
            (tuning gap, percentage points), ``time_ratio``, optionally
            ``deployed_passes``; a later row for the same pair replaces an earlier one.
        scenarios: the scenarios to choose on.
        size: the most settings in the sweep.
        also_run_on: only settings with a row on each of these too are candidates (a
            held-out scenario: its rows' existence is used, never their results).

    Returns:
        The sweep's grid points, in the order chosen (fewer than ``size`` when fewer
        settings are usable).

    Raises:
        ValueError: no setting ran on every scenario without diverging.
    """
    rows = list(rows)
    table = _table(rows)
    usable = {
        key: by_scenario
        for key, by_scenario in table.items()
        if all(s in by_scenario for s in [*scenarios, *also_run_on])
        and not any(diverged(by_scenario[s]) for s in scenarios)
    }
    ranked = [key for key, _ in rank(rows, scenarios) if key in usable]
    if not ranked:
        raise ValueError(f"no setting ran on every scenario of {list(scenarios)} without diverging")
    sweep = [ranked[0]]
    covered = {s for s in scenarios if usable[ranked[0]][s]["passed"]}
    while len(sweep) < size and len(covered) < len(scenarios):
        best, best_key = None, None
        for key in ranked:
            if key in sweep:
                continue
            gain = [s for s in scenarios if s not in covered and usable[key][s]["passed"]]
            if not gain:
                continue
            telling = [s for s in gain if not usable[key][s].get("deployed_passes", False)]
            passes = sum(bool(usable[key][s]["passed"]) for s in scenarios)
            mean_gain_score = statistics.fmean(usable[key][s]["score"] for s in gain)
            rank_key = (-len(gain), -len(telling), -passes, mean_gain_score)
            if best_key is None or rank_key < best_key:
                best, best_key = key, rank_key
        if best is None:
            break
        sweep.append(best)
        covered |= {s for s in scenarios if usable[best][s]["passed"]}
    sweep += [key for key in ranked if key not in sweep][: size - len(sweep)]
    return [json.loads(key) for key in sweep]


def sweep_outcome(
    rows: Iterable[dict[str, Any]], sweep: Sequence[dict[str, Any]], scenario: str
) -> dict[str, Any]:
    """What a revision running ``sweep`` gets on ``scenario``.

    A revision keeps one passing candidate: the passing run with the lowest score, else
    the first setting's failing row.

    Args:
        rows: tuning rows (see :func:`rank`); each setting of ``sweep`` must have one on
            ``scenario``.
        sweep: grid points, as :func:`choose_sweep` returns them.
        scenario: the scenario to look up.

    Returns:
        ``passed`` (any run passed), ``score`` (percentage points) and ``setting`` of the
        kept run, and ``seconds``: the sweep's total run time (seconds).

    Raises:
        KeyError: a setting of the sweep has no row on ``scenario`` (raised by the lookup).
    """
    table = _table(rows)
    runs = [table[setting_key(s)][scenario] for s in sweep]
    passing = [r for r in runs if r["passed"]]
    row = min(passing, key=lambda r: r["score"]) if passing else runs[0]
    return {
        "passed": bool(passing),
        "score": row["score"],
        "setting": row["setting"],
        "seconds": sum(float(r.get("seconds") or 0.0) for r in runs),
    }


def leave_one_dataset_out(
    rows: Iterable[dict[str, Any]],
    datasets: dict[str, Sequence[str]],
    size: int = 2,
) -> list[dict[str, Any]]:
    """Leave one dataset out: choose on the others, report on it.

    For each dataset in turn, choose the sweep (:func:`choose_sweep`) on the other
    datasets' scenarios and report it on the held-out dataset's scenarios.

    Args:
        rows: one per (scenario, setting): ``scenario``, ``setting``, ``passed``, ``score``
            (points), ``time_ratio``, ``seconds``.
        datasets: dataset name -> its scenarios (a dataset may hold several, e.g. HAM10000's
            device and outlier requests: held out together).
        size: sweep size (1: a single default).

    Returns:
        One entry per held-out dataset and scenario: ``held_out``, ``scenario``, ``sweep``
        (chosen without it) and its ``outcome`` there (:func:`sweep_outcome`).
    """
    rows = list(rows)
    out = []
    for held_out, held_scenarios in datasets.items():
        train = [s for d, ss in datasets.items() if d != held_out for s in ss]
        sweep = choose_sweep(rows, train, size, also_run_on=held_scenarios)
        for scenario in held_scenarios:
            out.append(
                {
                    "held_out": held_out,
                    "scenario": scenario,
                    "sweep": sweep,
                    "outcome": sweep_outcome(rows, sweep, scenario),
                }
            )
    return out
