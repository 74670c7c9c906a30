"""Flow ``maintenance``: a forget request in, a validated, gated, exported model revision out.

    python -m flows.maintenance [--request requests/retire_digit_3.yaml] [--params params.yaml]
    medunlearn revise --request requests/deprecate_device.yaml

Steps (one task module each): load-revision-inputs -> validate-data (Great Expectations)
-> unlearn-candidate (mapped over ``maintain.sweep``, cached) -> compose-candidates ->
evaluate-candidates (gates) -> write-revision-report -> export-onnx. Reads the ``maintain``,
``validation``, ``unlearn`` and ``gates`` sections. If no candidate passes the gates the flow
raises after writing its report, and nothing is exported; the deployed model is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm.auto import tqdm

from medunlearn.config import load_section
from medunlearn.revision import GatesFailed, run_timings, select_candidate
from medunlearn.unlearn.methods import psg_settings
from tasks.compose_candidates import compose_candidates
from tasks.evaluate_candidates import evaluate_candidates
from tasks.export_onnx import export_revision
from tasks.load_revision_inputs import load_revision_inputs
from tasks.unlearn_candidate import run_is_intact, with_local_cache
from tasks.validate_data import validate_data
from tasks.write_revision_report import write_revision_report

PSG_METHODS = ("psg", "boundary_shrink")
REPORT_KEYS = ("metrics", "tradeoff", "summary", "tradeoff_png", "validation")


def sweep_configs(
    maintain: dict[str, Any], unlearn: dict[str, Any], reason: str
) -> list[dict[str, Any]]:
    """One config per sweep entry: PSG-family entries start from the ``unlearn`` section (with
    its ``by_reason`` overrides for this request's reason); other methods from their defaults.

    ``maintain.sweep_by_reason[reason]`` adds entries for one reason only: where another
    method measured best for that reason (BENCHMARKS.md), it competes in the sweep too."""
    configs, names = [], set()
    extra = (maintain.get("sweep_by_reason") or {}).get(reason) or []
    for i, entry in enumerate(list(maintain.get("sweep") or []) + list(extra)):
        entry = dict(entry)
        name = str(entry.pop("name", f"run{i}"))
        method = entry.pop("method", "psg")
        if name in names:
            raise ValueError(f"maintain.sweep: duplicate name '{name}'")
        names.add(name)
        base: dict[str, Any] = {}
        if method in PSG_METHODS:
            base = psg_settings(unlearn, reason)
            if method == "boundary_shrink":
                base = {
                    k: v
                    for k, v in base.items()
                    if k not in ("steps", "step_size", "eps", "lam", "gamma")
                }
        configs.append({"name": name, "config": {"method": method, **base, **entry}})
    if not configs:
        raise ValueError("maintain.sweep lists no configs")
    return configs


def task_runner(maintain: dict[str, Any]):
    kind = maintain.get("task_runner", "threads")
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=int(maintain.get("max_workers", 2)))
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError(
                "maintain.task_runner 'dask' needs the prefect-dask package"
            ) from exc
        return DaskTaskRunner(address=maintain.get("dask_address"))
    raise ValueError(f"maintain.task_runner must be threads or dask, not '{kind}'")


@flow(name="maintenance", log_prints=True)
def maintenance_flow(
    params_path: str = "params.yaml",
    request: str | dict[str, Any] | None = None,
    refresh_cache: bool = False,
) -> dict[str, Any]:
    """Run one revision; ``request`` (a file or a mapping) overrides ``maintain.request``."""
    logger = get_run_logger()
    started_at = time.time()
    clock = Timings()
    maintain = load_section("maintain", params_path)
    validation = load_section("validation", params_path)
    unlearn = load_section("unlearn", params_path)
    bounds = load_section("gates", params_path)
    reports = maintain["reports"]
    work_dir = str(Path(maintain.get("work_dir", ".cache/maintain")))
    Path(work_dir).mkdir(parents=True, exist_ok=True)

    inputs = load_revision_inputs(
        maintain["dataset"], maintain["deployed"], request or maintain["request"]
    )
    clock.lap("load")
    data, cohorts = validate_data(
        inputs, validation, reports["validation"], float(maintain.get("max_in_memory_mb", 1024))
    )
    clock.lap("validate")
    configs = sweep_configs(maintain, unlearn, inputs.request.reason)

    def submit(config: dict[str, Any], refresh: bool):
        return with_local_cache(work_dir, refresh).submit(
            inputs,
            cohorts,
            config["name"],
            config["config"],
            work_dir,
            inputs.deployed_sha256,
            inputs.data_fingerprint,
            inputs.request.hash,
        )

    futures = [submit(c, refresh_cache) for c in configs]
    runs = []  # in order: a failure raises after the earlier runs finished (and were cached)
    pending = list(zip(configs, futures, strict=True))
    for config, future in tqdm(pending, desc="unlearning sweep", disable=not sys.stderr.isatty()):
        run = future.result()
        if not run_is_intact(run):  # a cache record whose checkpoint was deleted or edited
            logger.warning("%s: cached checkpoint missing or changed; recomputing", run["name"])
            run = submit(config, True).result()
        runs.append(run)
    clock.lap("unlearn")
    composed = compose_candidates(runs, cohorts, maintain.get("compose", {}), work_dir)
    clock.lap("compose")
    candidates = [{**r, "kind": "sweep"} for r in runs] + composed
    before, results, evaluate_seconds = evaluate_candidates(inputs, cohorts, candidates, bounds)
    clock.lap("evaluate")

    def timings() -> dict[str, Any]:
        return run_timings(clock.laps, runs, composed, evaluate_seconds, started_at)

    selected = select_candidate(results, maintain.get("select_by", "retain_test_acc"))
    if selected is None:
        write_revision_report(cohorts, before, results, None, reports, timings=timings())
        raise GatesFailed(
            f"no candidate of {len(results)} passed the {inputs.request.reason} gates; "
            f"report in {reports['summary']}, nothing exported"
        )
    run = next(c for c in candidates if c["name"] == selected.name)
    export = export_revision(
        inputs,
        data,
        selected,
        run,
        maintain["candidate"],
        maintain["onnx"],
        float(maintain.get("parity_atol", 1e-4)),
    )
    clock.lap("export")
    summary = write_revision_report(
        cohorts, before, results, selected, reports, export, timings=timings()
    )
    clock.lap("report")
    final = timings()
    logger.info(
        "revision %s selected %s; step seconds %s; overhead %.1f s",
        export["revision_id"],
        selected.name,
        final["step_seconds"],
        final["overhead_seconds"],
    )
    return {
        "revision_id": export["revision_id"],
        "selected": selected.name,
        "summary": summary,
        "export": export,
        "candidates": [c.to_dict() for c in results],
        "timings": final,
    }


class Timings:
    """Wall seconds of each step as the flow sees them (task orchestration included)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--request", help="forget request file (default: maintain.request)")
    parser.add_argument(
        "--refresh-cache",
        action="store_true",
        help="recompute every sweep run instead of reusing cached results",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    maintain = load_section("maintain", args.params)
    flow_fn = maintenance_flow.with_options(task_runner=task_runner(maintain))
    try:
        result = flow_fn(args.params, args.request, args.refresh_cache)
    except GatesFailed as exc:
        print(f"revision refused: {exc}", file=sys.stderr)
        print(Path(maintain["reports"]["summary"]).read_text(), file=sys.stderr)
        raise SystemExit(1) from exc
    print(json.dumps(result, indent=2, default=str) if args.json else result["summary"])


if __name__ == "__main__":
    main()
