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

    ``inputs``/``cohorts``/``selected`` are the flow's revision inputs, cohorts and chosen
    candidate; only the request's hashed selector is kept, never raw identifiers."""
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
    """What a trained deployed model records: ``body`` is its training report
    (``training.training_report``), ``cfg`` the ``train`` section."""
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
