"""What a revision records: the JSON the registry stores for each version.

Built from plain values (no Prefect), so the flows only gather inputs and the registry
(``medunlearn.revision.registry``) adds the version, artifact hashes and push state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medunlearn.config import params_hash
from medunlearn.revision.card import hashed_selector
from medunlearn.revision.registry import code_commit
from medunlearn.versioning import data_version, source_hash


def unlearned_record(
    inputs: Any,
    cohorts: Any,
    selected: Any,
    export: dict[str, Any],
    parent: str | None,
    params: dict[str, Any],
    core_hash: str,
    root: Path,
) -> dict[str, Any]:
    """What a maintenance revision records (the registry adds version, hashes, push state).

    Only the request's hashed selector is kept, never raw identifiers.

    Args:
        inputs: the flow's revision inputs (``request``, ``dataset_dir``,
            ``deployed_sha256``, ``data_fingerprint``).
        cohorts: the revision's cohorts (``masks.counts``: examples per cohort).
        selected: the chosen candidate (``name``, ``gates``, ``metrics``).
        export: the export's report (its ``revision_id``).
        parent: the registered version revised, or None for an unregistered model.
        params: the parsed ``params.yaml`` (its ``maintain``, ``validation``, ``unlearn``
            and ``gates`` sections are recorded and hashed).
        core_hash: the hash of the core package's source.
        root: the repository (for the code commit).

    Returns:
        the record: ``kind: unlearned``, parent and its sha256, the request (hashed
        selector), counts, data version and fingerprint, params and their hash, code commit,
        core hash, revision id, candidate, gates and metrics.
    """
    request = inputs.request
    sections = {k: params.get(k) for k in ("maintain", "validation", "unlearn", "gates")}
    dvc_file = Path(inputs.dataset_dir).parent.with_suffix(".dvc")
    return {
        "kind": "unlearned",
        "parent": parent,
        "parent_sha256": inputs.deployed_sha256,
        "requests": [
            {
                "id": request.hash,
                "reason": request.reason,
                "selector": hashed_selector(request.selector),
                "fraction": request.fraction,
            }
        ],
        "counts": cohorts.masks.counts,
        "data_version": data_version(dvc_file) or "unversioned",
        "data_fingerprint": inputs.data_fingerprint,
        "params_hash": params_hash(*sections.values()),
        "params": sections,
        "code_commit": code_commit(root),
        "core_hash": core_hash,
        "revision_id": export["revision_id"],
        "request_hash": request.hash,  # as in the reports and the ONNX metadata
        "candidate": selected.name,
        "gates": selected.gates,
        "metrics": selected.metrics,
    }


def trained_record(body: dict[str, Any], cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """What a trained deployed model records.

    Args:
        body: its training report (``training.training_report``): ``n_train``/``n_val``/
            ``n_test``, ``data_version``, ``params_hash`` and ``test`` metrics.
        cfg: the ``train`` section of ``params.yaml``.
        root: the repository (for the code commit).

    Returns:
        the record: ``kind: trained``, no parent or requests, counts, data version, params
        and their hash, code commit, core hash, gates passed as ``trained`` (no unlearning
        gates) and the numeric test metrics as ``test_<name>``.
    """
    return {
        "kind": "trained",
        "parent": None,
        "requests": [],
        "counts": {k: body.get(k) for k in ("n_train", "n_val", "n_test")},
        "data_version": body.get("data_version") or "unversioned",
        "params_hash": body.get("params_hash"),
        "params": {"train": cfg},
        "code_commit": code_commit(root),
        "core_hash": source_hash(),
        "gates": {
            "passed": True,
            "reason": "trained",
            "checks": [],
            "note": "a trained model: no forget request, so no unlearning gates",
        },
        "metrics": {
            f"test_{k}": v
            for k, v in (body.get("test") or {}).items()
            if isinstance(v, int | float)
        },
    }
