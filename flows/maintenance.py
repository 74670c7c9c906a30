"""Flow ``maintenance``: a forget request in, a validated, gated, exported model revision out.

    python -m flows.maintenance [--request requests/retire_digit_3.yaml] [--params params.yaml]
    medunlearn revise --request requests/deprecate_device.yaml

Steps (one task module each): load-revision-inputs -> validate-data (Great Expectations)
-> unlearn-candidate (mapped over ``maintain.sweep``, cached) -> compose-candidates ->
evaluate-candidates (gates) -> export-onnx -> write-revision-report. Reads the ``maintain``,
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
from medunlearn.data.manifest import ManifestError
from medunlearn.refusal import quiet_refusals
from medunlearn.revision import GatesFailed, run_timings, select_candidate
from medunlearn.sweep import check_sweeps, sweep_configs
from medunlearn.validation import ValidationFailed
from medunlearn.versioning import source_hash
from tasks.compose_candidates import compose_candidates
from tasks.evaluate_candidates import evaluate_candidates
from tasks.export_onnx import export_revision
from tasks.load_revision_inputs import load_revision_inputs
from tasks.unlearn_candidate import run_is_intact, with_local_cache
from tasks.validate_data import validate_data
from tasks.write_revision_report import write_revision_report

REPORT_KEYS = ("metrics", "tradeoff", "summary", "tradeoff_png", "validation")


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

    check_sweeps(maintain, unlearn)  # a bad sweep entry fails before any data is read
    inputs = load_revision_inputs(
        maintain["dataset"], maintain["deployed"], request or maintain["request"]
    )
    clock.lap("load")
    data, cohorts = validate_data(
        inputs, validation, reports["validation"], float(maintain.get("max_in_memory_mb", 1024))
    )
    clock.lap("validate")
    configs = sweep_configs(maintain, unlearn, inputs.request.reason)
    core_hash = source_hash()

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
            core_hash,
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
    before, baseline, results, evaluate_seconds = evaluate_candidates(
        inputs, cohorts, candidates, bounds
    )
    clock.lap("evaluate")

    def timings() -> dict[str, Any]:
        return run_timings(clock.laps, runs, composed, evaluate_seconds, started_at)

    selected = select_candidate(results, maintain.get("select_by", "retain_test_acc"))
    if selected is None:
        write_revision_report(
            cohorts, before, results, None, reports, timings=timings(), baseline=baseline
        )
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
        cohorts, before, results, selected, reports, export, timings=timings(), baseline=baseline
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
        "baseline": baseline,  # the untouched deployed model under the same gates
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
    quiet_refusals()
    flow_fn = maintenance_flow.with_options(task_runner=task_runner(maintain))
    try:
        result = flow_fn(args.params, args.request, args.refresh_cache)
    except GatesFailed as exc:
        print(f"revision refused: {exc}", file=sys.stderr)
        print(Path(maintain["reports"]["summary"]).read_text(), file=sys.stderr)
        raise SystemExit(1) from exc
    except (ManifestError, ValidationFailed) as exc:  # bad input: nothing was trained
        print(f"revision refused, input data: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(json.dumps(result, indent=2, default=str) if args.json else result["summary"])


if __name__ == "__main__":
    main()
