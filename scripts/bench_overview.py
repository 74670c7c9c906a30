"""Cross-scenario overview of the benchmark results (the tables of BENCHMARKS.md, issue 11).

    python scripts/bench_overview.py [reports/bench]

Prints, from ``reports/bench/<scenario>.json``:
1. per scenario: the retrain noise floor (Avg Gap of the extra retrains, mean ± sd), the
   best of the PSG family (psg, boundary_shrink, psg_compose) and plain Boundary Shrink, the
   lowest Avg Gap overall, and whether the PSG family (here with psg_compose)
   is within the noise floor (its best Avg Gap <= the retrains' mean + 1 sd);
2. the gate calibration of every scenario: retrains refused, memorised models refused on a
   membership check, with median membership and LiRA AUCs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PSG_FAMILY = ("psg", "boundary_shrink", "psg_compose")


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def gap_rows(results: list[dict]) -> list[str]:
    lines = [
        "| scenario | noise floor (pp) | PSG family best | Boundary Shrink | lowest overall | "
        "PSG family within floor | beats Boundary Shrink |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["summary"]
        floor = r["noise_floor"]["avg_gap"]
        fam = {m: s[m]["avg_gap"]["mean"] for m in PSG_FAMILY if m in s}
        best = min(fam, key=fam.get) if fam else None
        overall = min(s, key=lambda m: s[m]["avg_gap"]["mean"]) if s else None
        shrink = fam.get("boundary_shrink")
        limit = (floor["mean"] or 0) + (floor["std"] or 0)
        lines.append(
            f"| {r['scenario']} | {_f(floor['mean'])} ± {_f(floor['std'])} | "
            f"{best} {_f(fam.get(best))} | {_f(shrink)} | {overall} "
            f"{_f(s[overall]['avg_gap']['mean']) if overall else 'n/a'} | "
            f"{'yes' if best and fam[best] <= limit else 'no'} | "
            f"{'yes' if best and shrink is not None and fam[best] < shrink else 'no'} |"
        )
    return lines


def calibration_rows(results: list[dict]) -> list[str]:
    lines = [
        "| scenario | profile | retrains refused | memorised refused on membership | "
        "memorised refused (any check) | median MIA AUC retrain / memorised | "
        "median LiRA AUC retrain / memorised | one image: retrains refused, memorised "
        "refused on membership |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.get("calibration")
        if not c:
            continue
        s = c["summary"]
        ret, mem = s["retrain"], s["memorised"]
        one = s.get("single_retrain") or {"n": 0}
        one_m = s.get("single_memorised") or {"n": 0}
        single = (
            f"{one['refused']}/{one['n']}, {one_m['privacy_refused']}/{one_m['n']}"
            if one["n"]
            else "n/a"
        )
        lines.append(
            f"| {r['scenario']} | {c['reason']} | {ret['refused']}/{ret['n']} | "
            f"{mem['privacy_refused']}/{mem['n']} | {mem['refused']}/{mem['n']} | "
            f"{_f(ret['median_auc'], 3)} / {_f(mem['median_auc'], 3)} | "
            f"{_f(ret.get('median_lira_auc'), 3)} / {_f(mem.get('median_lira_auc'), 3)} | "
            f"{single} |"
        )
    return lines


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/bench")
    loaded = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    results = [r for r in loaded.values() if "noise_floor" in r]  # issue-11 protocol only
    stale = [name for name, r in loaded.items() if "noise_floor" not in r]
    if stale:
        print(f"not shown (older protocol, no noise floor): {', '.join(stale)}\n")
    print("\n".join(gap_rows(results)))
    print()
    print("\n".join(calibration_rows(results)))


if __name__ == "__main__":
    main()
