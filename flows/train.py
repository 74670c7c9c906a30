"""Flow ``train``: train the deployed model (or the retrain reference) from ``params.yaml``.

    medunlearn train                          # deployed model, settings from params.yaml:train
    medunlearn train --role retrain --exclude "label == '2'"   # retain cohort only
    dvc repro train && medunlearn register    # trained by the DVC stage, registered after

Reads the ``train`` section. Steps: load-data -> fit-model -> evaluate-model -> save-model
-> register-revision (a deployed model becomes the next major version of ``registry.model``
when the registry is on: ``registry``/``promotion`` sections, ``medunlearn.revision.registry``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from medunlearn.atomic import staging_dir
from medunlearn.config import load_params, load_section, project_root
from medunlearn.data.dataset import DatasetSplits
from medunlearn.revision.records import trained_record
from medunlearn.revision.registry import RegistryError, active_registry
from tasks.evaluate_model import evaluate_model
from tasks.export_onnx import export_trained
from tasks.fit_model import fit_model
from tasks.load_data import load_data
from tasks.register_revision import register_revision
from tasks.save_model import save_model

ROLES = ("deployed", "retrain")


@flow(name="train", flow_run_name="train-{role}", log_prints=True)
def train_flow(
    params_path: str = "params.yaml",
    role: str = "deployed",
    exclude: str | None = None,
    output: str | None = None,
    report: str | None = None,
) -> dict[str, Any]:
    """Train, pick the best epoch on val, evaluate on test, save checkpoint and report.

    Args:
        params_path: the params file (its ``train`` section; ``registry`` to register).
        role: ``deployed`` (registered when the registry is on) or ``retrain`` (the retrain
            reference: needs ``exclude``, writes to ``train.retrain_output`` /
            ``train.retrain_report`` by default).
        exclude: a pandas query over manifest columns: the train/val rows to leave out.
        output: the checkpoint path (default ``train.output``).
        report: the report path (default ``train.report``).

    Returns:
        The training report (see :func:`tasks.save_model.save_model`); a deployed model's
        has ``registered``: :func:`register_trained`'s result.

    Raises:
        ValueError: an unknown ``role``, or ``retrain`` without ``exclude``.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if role == "retrain" and not exclude:
        raise ValueError("the retrain reference needs --exclude: the rows it must not see")
    cfg = load_section("train", params_path)
    prefix = "" if role == "deployed" else "retrain_"
    output = output or cfg[f"{prefix}output"]
    report = report or cfg[f"{prefix}report"]
    history = cfg.get(f"{prefix}history")
    data = load_data(cfg["dataset"], float(cfg.get("max_in_memory_mb", 1024)), exclude)
    result = fit_model(data, cfg)
    metrics = evaluate_model(result.model, data)
    body = save_model(result, metrics, data, cfg, role, output, report, history, exclude)
    if role == "deployed":
        body["registered"] = register_trained(params_path, cfg, body, output, report, data)
    return body


def register_trained(
    params_path: str,
    cfg: dict[str, Any],
    body: dict[str, Any],
    output: str,
    report: str,
    data: DatasetSplits,
) -> dict[str, Any] | None:
    """Register a trained deployed model as the next major version (v1.0.0 first).

    The registry's model gets it as ``candidate``, with its checkpoint, ONNX file (checked
    on ``data.val``) and report.

    Args:
        params_path: the params file (``registry``, ``maintain.parity_atol``).
        cfg: its ``train`` section.
        body: the training report.
        output: the checkpoint.
        report: the training report's file.
        data: the dataset's splits (validation images for the ONNX parity check).

    Returns:
        ``model``, ``version`` and ``pushed`` (to the DVC remote); ``None`` when the
        registry is off (logged why).
    """
    logger = get_run_logger()
    params = load_params(params_path)
    registry, why = active_registry(params, project_root(params_path))
    if registry is None:
        logger.info("not registered: %s", why)
        return None
    name = str(params["registry"].get("model", "classifier"))
    version = registry.next_version(name, "major")
    home = registry.root / registry.models_dir
    folder = staging_dir(home, ".revision-")
    try:
        shutil.copy2(output, folder / "model.pt")
        atol = float((params.get("maintain") or {}).get("parity_atol", 1e-4))
        export_trained(output, data, str(folder / "model.onnx"), version, atol)
        (folder / "reports").mkdir()
        shutil.copy2(report, folder / "reports" / Path(report).name)
        record = trained_record(body, cfg, registry.root)
        full = register_revision(str(folder), record, registry, name, version, ("candidate",))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"model": name, "version": full["version"], "pushed": full["pushed"]}


@flow(name="register", flow_run_name="register-trained", log_prints=True)
def register_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Register the deployed model a DVC stage trained as the next major version.

    The model is ``train.output`` with its report ``train.report``; as :func:`train_flow`
    does outside DVC: ONNX exported and checked on ``data.val``, the record committed,
    GTO-tagged.

    Args:
        params_path: the params file.

    Returns:
        The training report with ``registered`` (model, version, pushed).

    Raises:
        RegistryError: the checkpoint or report is missing, the report is not this
            checkpoint's, or the registry is off (names why).
    """
    cfg = load_section("train", params_path)
    output, report = str(cfg["output"]), str(cfg["report"])
    for path in (output, report):
        if not Path(path).is_file():
            raise RegistryError(f"{path}: not found; train first (dvc repro train)")
    body = json.loads(Path(report).read_text())
    if body.get("role") != "deployed" or Path(body.get("checkpoint", "")) != Path(output):
        raise RegistryError(
            f"{report}: the report of {body.get('checkpoint')} ({body.get('role')}), not of "
            f"the deployed model {output}; train again"
        )
    registry, why = active_registry(load_params(params_path), project_root(params_path))
    if registry is None:
        raise RegistryError(f"nothing registered: {why}")
    data = load_data(cfg["dataset"], float(cfg.get("max_in_memory_mb", 1024)), None)
    return {**body, "registered": register_trained(params_path, cfg, body, output, report, data)}
