"""Step: export the selected candidate to ONNX, check it, and write both model files.

Both go into ``out_dir``, a fresh folder the flow made for this revision (never a path a
previous revision used): the checkpoint is written only after ``onnx.checker`` and the
parity check pass, so a failed export leaves no model, and the flow moves the whole folder
into place (registry version path or ``maintain.candidate_dir``) as one rename. The graph
of an earlier export of the same architecture is reused from ``graph_cache`` (see
``medunlearn.models.export``); one that fails the parity check is discarded and the model traced
afresh (``export_checked``), so a stale template can cost time but never ship a wrong model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.dataset import DatasetSplits
from medunlearn.data.request import retired_classes
from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint
from medunlearn.models.export import ExportError, export_checked, serving_metadata
from medunlearn.revision.candidates import CandidateResult
from medunlearn.versioning import file_sha256
from tasks.compose_candidates import load_run
from tasks.load_revision_inputs import RevisionInputs


def revision_id(request_hash: str, candidate_sha256: str, data_fingerprint: str) -> str:
    """A revision's id: the same request, candidate and data always give the same id.

    Args:
        request_hash: the forget request's hash.
        candidate_sha256: the selected candidate checkpoint's SHA-256.
        data_fingerprint: the dataset's content hash.

    Returns:
        ``rev-`` and the first 12 hex digits of the SHA-256 of the three, joined by ``:``.
    """
    blob = f"{request_hash}:{candidate_sha256}:{data_fingerprint}".encode()
    return "rev-" + hashlib.sha256(blob).hexdigest()[:12]


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_revision(
    inputs: RevisionInputs,
    data: DatasetSplits,
    selected: CandidateResult,
    run: dict[str, Any],
    out_dir: str,
    atol: float = 1e-4,
    graph_cache: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Export the selected candidate: ``out_dir/model.onnx`` and ``out_dir/model.pt``.

    ONNX export, ``onnx.checker`` and onnxruntime parity on the validation images, then the
    checkpoint; the ONNX file is staged and renamed into place last, so a failure leaves
    neither. The ONNX metadata names ``version`` (the registry version planned for it), the
    input contract and the classes the revision retired
    (``medunlearn.models.export.serving_metadata``).

    Args:
        inputs: the revision's inputs (request, data fingerprint, deployed model's hash).
        data: the dataset's splits (validation images for the parity check).
        selected: the selected candidate's result (its metrics and gates are recorded).
        run: the selected candidate's record (``checkpoint``, ``sha256``).
        out_dir: the revision's fresh folder (exists).
        atol: the parity bound: max |ONNX - PyTorch| of any logit.
        graph_cache: a folder of graph templates to reuse (None: always trace).
        version: the registry version planned for it (None: unregistered).

    Returns:
        ``revision_id``, ``checkpoint`` and ``onnx`` paths, ``parity`` (its record),
        ``graph_from_template`` and the ONNX ``metadata``.

    Raises:
        CheckpointError: the candidate's checkpoint changed since it was written (raised by
            :func:`tasks.compose_candidates.load_run`).
        ExportError: the checker or the parity check refused the export (raised by
            :func:`export_or_refuse`).
    """
    logger = get_run_logger()
    model, meta = load_run(run)
    rev = revision_id(inputs.request.hash, run["sha256"], inputs.data_fingerprint)
    metrics = {
        k: selected.metrics.get(k)
        for k in (
            "forget_train_acc",
            "forget_heldout_acc",
            "retain_test_acc",
            "retain_test_balanced_acc",
            "test_acc",
        )
    }
    metrics["mia_auc"] = (selected.metrics.get("membership") or {}).get("auc")
    metadata = {
        "revision_id": rev,
        "request_hash": inputs.request.hash,
        "request_reason": inputs.request.reason,
        "data_version": meta.data_version or "unversioned",
        "data_fingerprint": inputs.data_fingerprint,
        "parent_model_sha256": inputs.deployed_sha256,
        "candidate": selected.name,
        "metrics": metrics,
        **serving_metadata(meta, version, retired_classes(inputs.manifest, inputs.request)),
    }
    onnx_path = Path(out_dir) / "model.onnx"
    candidate_path = Path(out_dir) / "model.pt"
    staging = onnx_path.with_name(f".model.onnx.{os.getpid()}.staging")
    try:
        exported, parity = export_or_refuse(model, staging, data, metadata, atol, graph_cache)
        meta.extra = {**meta.extra, "revision_id": rev, "candidate": selected.name}
        meta.metrics = {"revision": metrics, "gates": selected.gates}
        save_checkpoint(candidate_path, model, meta)
        os.replace(staging, onnx_path)
    finally:
        staging.unlink(missing_ok=True)
    logger.info(
        "revision %s: %s and %s (parity max |diff| %.2e; graph %s)",
        rev,
        candidate_path,
        onnx_path,
        parity.max_abs_diff,
        "from a template" if exported.from_template else "traced",
    )
    return {
        "revision_id": rev,
        "checkpoint": str(candidate_path),
        "onnx": str(onnx_path),
        "parity": parity.to_dict(),
        "graph_from_template": exported.from_template,
        "metadata": metadata,
    }


@task(name="export-onnx-trained", cache_policy=NO_CACHE)
def export_trained(
    checkpoint: str,
    data: DatasetSplits,
    out_path: str,
    version: str | None,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export a trained (deployed) model's checkpoint to ONNX at ``out_path``.

    The first registered version has its ONNX file like every revision, so a rollback to
    it never leaves the serving folder without one. Same checks as
    :func:`export_revision`; nothing is retired yet.

    Args:
        checkpoint: the trained model's checkpoint.
        data: the dataset's splits (validation images for the parity check).
        out_path: the ONNX file to write.
        version: the registry version planned for it (None: unregistered).
        atol: the parity bound: max |ONNX - PyTorch| of any logit.

    Returns:
        ``onnx`` (the path), ``parity`` (its record) and the ONNX ``metadata``.

    Raises:
        ExportError: the checker or the parity check refused the export (raised by
            :func:`export_or_refuse`).
    """
    model, meta = load_checkpoint(checkpoint)
    metadata = {
        "data_version": meta.data_version or "unversioned",
        "model_sha256": file_sha256(checkpoint),
        **serving_metadata(meta, version),
    }
    _, parity = export_or_refuse(model, Path(out_path), data, metadata, atol, None)
    get_run_logger().info("%s: parity max |diff| %.2e", out_path, parity.max_abs_diff)
    return {"onnx": out_path, "parity": parity.to_dict(), "metadata": metadata}


def export_or_refuse(
    model: Any,
    path: Path,
    data: DatasetSplits,
    metadata: dict[str, Any],
    atol: float,
    graph_cache: str | None,
) -> tuple[Any, Any]:
    """``export_checked`` on the validation images; a failed parity check raises.

    Args:
        model: the model to export (eval mode).
        path: the ONNX file to write.
        data: the dataset's splits: the first 2 validation images are the trace example,
            every validation image is checked for parity.
        metadata: the ONNX metadata properties.
        atol: the parity bound: max |ONNX - PyTorch| of any logit.
        graph_cache: a folder of graph templates to reuse (None: always trace).

    Returns:
        The export (``medunlearn.models.export``'s result; ``from_template``) and its
        passed parity check (``max_abs_diff``, ``n_images``, ``labels_identical``).

    Raises:
        ExportError: ``onnx.checker`` refused the graph, or onnxruntime and PyTorch disagree.
    """
    example = data.val.all_images()[:2] if data.val.in_memory else _first_images(data.val, 2)
    exported, parity = export_checked(model, path, example, data.val, metadata, atol, graph_cache)
    if not parity.passed:
        raise ExportError(
            f"ONNX parity failed on {parity.n_images} validation images: max |diff| "
            f"{parity.max_abs_diff:.2e} (bound {atol}), labels identical: "
            f"{parity.labels_identical}"
        )
    return exported, parity


def _first_images(images, n: int):
    import torch

    return torch.stack([images[i][0] for i in range(min(n, len(images)))])
