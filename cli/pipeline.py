"""The pipeline's commands: ``prepare``, ``train``, ``revise``, ``drift``, ``serve``, ``bench``.

Each declares its options, runs one flow with typed parameters and prints the result
(``--json``: the flow's result as JSON). Flows are imported inside the command.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.app import JsonFlag, ParamsFile, app, emit


class Role(str, Enum):
    """What ``train`` trains."""

    deployed = "deployed"
    retrain = "retrain"


class Runner(str, Enum):
    """Where ``bench`` runs the method runs."""

    sequential = "sequential"
    dask = "dask"


@app.command()
def prepare(as_json: JsonFlag = False, params: ParamsFile = "params.yaml") -> None:
    """Materialise data/<name> from the [bold]data[/] section and version it with DVC."""
    from prefect import tags

    from flows.prepare import prepare_flow

    with tags("medunlearn", "prepare"):
        info = prepare_flow(params)
    emit(info, as_json, prepare_summary)


def prepare_summary(info: dict[str, Any]) -> str:
    """One line: the dataset, its source, counts, classes, shape and data version.

    Args:
        info: ``flows.prepare.prepare_flow``'s result.

    Returns:
        The line.
    """
    size = info["image_size"]
    return (
        f"dataset {info['dataset']} ({info['source']}): {info['counts']} images, "
        f"{len(info['class_names'])} classes, {info['channels']}x{size}x{size}, "
        f"data version {info['data_version']}"
    )


@app.command()
def train(
    role: Annotated[
        Role, typer.Option(help="the deployed model (registered) or the retrain reference")
    ] = Role.deployed,
    exclude: Annotated[
        str | None, typer.Option(help="pandas query over manifest columns: rows to leave out")
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="checkpoint path (default: train.output)")
    ] = None,
    report: Annotated[str | None, typer.Option(help="report path (default: train.report)")] = None,
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Train from the [bold]train[/] section; a deployed model is registered and exported."""
    from prefect import tags

    from flows.train import train_flow

    with tags("medunlearn", "train", role.value):
        report_ = train_flow(params, role.value, exclude, output, report)
    emit(report_, as_json, train_summary)


@app.command()
def register(as_json: JsonFlag = False, params: ParamsFile = "params.yaml") -> None:
    """Register the model `dvc repro train` trained as the next major version.

    The deployed model at [bold]train.output[/]: ONNX exported, record committed,
    tagged (a candidate).
    """
    from prefect import tags

    from flows.train import register_flow

    with tags("medunlearn", "register"):
        report_ = register_flow(params)
    emit(report_, as_json, train_summary)


def train_summary(report: dict[str, Any]) -> str:
    """A one-screen summary of a training report.

    Args:
        report: ``flows.train.train_flow``'s result.

    Returns:
        The lines: data, best epoch and seconds per epoch, test accuracy, balanced
        accuracy and macro AUC, per-class accuracy, checkpoint, registration.
    """

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    test = report["test"]
    lines = [
        f"trained {report['role']} model '{report['model']}' on {report['dataset']} "
        f"(data version {report['data_version']})",
        f"  train/val/test images: {report['n_train']}/{report['n_val']}/{report['n_test']}"
        + (f", excluded by {report['exclude']!r}" if report.get("exclude") else ""),
        f"  best epoch {report['best_epoch']}/{report['epochs']}, "
        f"{report['seconds_per_epoch']:.1f}s per epoch",
        f"  test accuracy {test['accuracy']:.3f}, balanced accuracy "
        f"{test['balanced_accuracy']:.3f}, macro AUC {fmt(test['macro_auc'])}",
        "  per-class accuracy: "
        + ", ".join(f"{name} {fmt(v['accuracy'])}" for name, v in test["per_class"].items()),
        f"  checkpoint {report['checkpoint']}",
    ]
    registered = report.get("registered")
    if registered:
        lines.append(
            f"  registered {registered['model']} {registered['version']} (candidate)"
            + ("" if registered["pushed"] else "; not pushed to the DVC remote")
        )
    return "\n".join(lines)


@app.command()
def revise(
    request: Annotated[
        Path | None,
        typer.Option(
            help="forget request file (default: every pending ledger request, else "
            "maintain.request)"
        ),
    ] = None,
    refresh_cache: Annotated[
        bool,
        typer.Option(
            "--refresh-cache",
            metavar="",
            help="recompute every sweep run and the manifest validation instead of reusing them",
        ),
    ] = False,
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """One revision per forget request: validate, unlearn, compose, gates, export, register.

    Without [bold]--request[/], every pending ledger request in the order received.
    A request whose candidates all fail the gates, or whose data is refused, is
    reported and the next one still runs; the command then exits 1.
    """
    from flows.revise import check_revision_settings, revision_jobs, run_revision
    from medunlearn.config import load_section
    from medunlearn.data.expectations import ValidationFailed
    from medunlearn.data.manifest import ManifestError
    from medunlearn.data.request import RequestError
    from medunlearn.revision.candidates import GatesFailed
    from medunlearn.revision.ledger import AlreadyApplied, LedgerError

    check_revision_settings(params)
    refused = 0
    results = []
    for file, ledger_id in revision_jobs(params, str(request) if request else None):
        try:
            result = run_revision(params, file, refresh_cache, ledger_id)
        except AlreadyApplied as exc:  # e.g. `make demo` run twice: nothing to revise
            print(f"nothing to do: {exc}", file=sys.stderr if as_json else sys.stdout)
            continue
        except GatesFailed as exc:
            print(f"revise refused: {exc}", file=sys.stderr)
            summary = Path(load_section("maintain", params)["reports"]["summary"])
            if summary.is_file():
                print(summary.read_text(), file=sys.stderr)
            refused += 1
            continue
        except (ManifestError, ValidationFailed, LedgerError, RequestError) as exc:
            if ledger_id is None:
                raise
            print(f"revise refused, input data: {exc}", file=sys.stderr)
            refused += 1  # the entry is rejected; the next pending request still runs
            continue
        results.append(result)
        if not as_json:
            print(result["summary"])
    if as_json:
        emit(results, True)
    if refused:
        raise SystemExit(1)


@app.command()
def drift(
    batch: Annotated[
        str | None, typer.Option(help="a batch manifest or folder (default: drift.incoming)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", metavar="", help="test a batch checked before")
    ] = False,
    as_json: JsonFlag = False,
    params: ParamsFile = "params.yaml",
) -> None:
    """Compare the newest incoming batch with the production model's data; emit events."""
    from prefect import tags

    from flows.drift import drift_watch_flow
    from medunlearn.config import load_section

    with tags("medunlearn", "drift"):
        result = drift_watch_flow(params, batch, force)
    emit({**result, "report": load_section("drift", params).get("report")}, as_json, drift_summary)


def drift_summary(result: dict[str, Any]) -> str:
    """The drift watch's findings, one line each, and where its report is.

    Args:
        result: ``flows.drift.drift_watch_flow``'s result.

    Returns:
        The lines.
    """
    if result["status"] == "no batch":
        return f"no batch manifest in {result['batch']}: nothing to do"
    found = [t for t in result["tests"] if t["drifted"]]
    where = result.get("report")
    lines = []
    if result["status"] == "already checked":
        lines.append(f"{result['batch']} was checked before (--force tests it again)")
    lines.append(f"{len(found)} drift finding(s) in {result['batch']}; report {where}")
    lines += [f"  not tested: {note}" for note in result.get("notes") or []]
    lines += [
        f"  {t['attribute']} {t['kind']} {t['value'] or ''} p = {t['p_value']:.3g}" for t in found
    ]
    return "\n".join(lines)


@app.command()
def serve(params: ParamsFile = "params.yaml") -> None:
    """Serve the deployments against PREFECT_API_URL until interrupted.

    maintenance/scheduled, drift-watch/scheduled and maintenance/on-drift.
    """
    from flows.deployments import serve as serve_deployments

    serve_deployments(params)


def _split(values: list[str] | None) -> list[str] | None:
    """``--methods a --methods b`` and ``--methods a,b`` alike."""
    if not values:
        return None
    return [v for value in values for v in value.split(",") if v]


@app.command()
def bench(
    scenarios: Annotated[
        list[Path], typer.Argument(help="scenario YAML files (benchmarks/*.yaml)")
    ],
    methods: Annotated[
        list[str] | None,
        typer.Option(help="methods to run (repeat, or comma-separated; default: all)"),
    ] = None,
    seeds: Annotated[
        list[str] | None, typer.Option(help="seeds (repeat, or comma-separated)")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", metavar="", help="one seed, tiny grid, short training")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="output folder (default reports/bench, reports/bench/quick with --quick)"
        ),
    ] = None,
    cache: Annotated[
        Path, typer.Option(help="where materialised datasets and models are cached")
    ] = Path(".cache/bench"),
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads")] = None,
    calibration_only: Annotated[
        bool,
        typer.Option(
            "--calibration-only",
            metavar="",
            help="recompute only the gate calibration of each scenario into its result",
        ),
    ] = False,
    models_only: Annotated[
        bool,
        typer.Option(
            "--models-only", metavar="", help="only train (or find cached) each scenario's models"
        ),
    ] = False,
    task_runner: Annotated[
        Runner, typer.Option(help="run the methods here, or as Prefect tasks on Dask")
    ] = Runner.sequential,
    dask_address: Annotated[
        str | None, typer.Option(help="an existing Dask scheduler (with --task-runner dask)")
    ] = None,
    dask_workers: Annotated[
        int | None, typer.Option(min=1, help="local Dask worker processes (default 2)")
    ] = None,
    threads_per_run: Annotated[
        int, typer.Option(min=1, help="torch threads per method run on Dask")
    ] = 1,
    as_json: JsonFlag = False,
    params: Annotated[Path, typer.Option(help="the project's params file")] = Path("params.yaml"),
) -> None:
    """The benchmark suite on scenario files: every method, the retrain reference, gates."""
    from medunlearn.benchmark.report import calibration_lines, markdown_table
    from medunlearn.benchmark.suite import (
        default_out,
        load_scenarios,
        pretrain_models,
        recalibrate,
        run_scenarios,
    )
    from medunlearn.unlearn.methods import METHODS

    names = _split(methods)
    unknown = sorted(set(names or []) - set(METHODS))
    if unknown:
        raise typer.BadParameter(
            f"unknown method(s) {', '.join(unknown)}; known: {', '.join(sorted(METHODS))}",
            param_hint="--methods",
        )
    try:
        seed_list = [int(s) for s in _split(seeds) or []] or None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--seeds") from None
    if task_runner is Runner.sequential and (dask_address or dask_workers):
        raise typer.BadParameter(
            "needs --task-runner dask", param_hint="--dask-address/--dask-workers"
        )
    loaded = load_scenarios(scenarios, quick=quick)  # a bad file fails before any work
    folder = out or default_out(quick)
    if calibration_only:
        done = list(recalibrate(loaded, params, folder, cache))
        emit(
            done,
            as_json,
            lambda rs: "\n".join("\n".join(calibration_lines(r.get("calibration"))) for r in rs),
        )
        return
    if models_only:
        pretrain_models(loaded, cache)
        return
    if task_runner is Runner.dask:
        from flows.benchmark import run_on_dask

        results = run_on_dask(
            [str(p) for p in scenarios],
            str(params),
            names,
            seed_list,
            quick,
            str(folder),
            str(cache),
            threads,
            threads_per_run,
            dask_address,
            dask_workers or 2,
        )
        emit(results, as_json, lambda rs: "\n".join(markdown_table(r) for r in rs))
        return
    results = []
    for result, paths in run_scenarios(
        loaded, params, names, seed_list, quick, folder, cache, threads
    ):
        results.append(result)
        if not as_json:
            print(markdown_table(result))
            print("wrote " + ", ".join(str(p) for p in paths.values()))
    if as_json:
        emit(results, True)
