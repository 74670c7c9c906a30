"""Flow ``audit``: a per-example membership audit (offline LiRA) of a registered revision.

    medunlearn audit classifier v1.1.0 --reference-models 4 [--epochs 2] [--json]

Steps (one task module each): plan-audit -> train-reference (one task per reference model,
on ``maintain.task_runner``: threads, or Dask through prefect-dask, which spreads them over
its workers) -> write-audit (``registry/<model>/<version>/audit.json``, the regenerated card,
one commit). The work is ``medunlearn.revision.audit``; reference models are cached on disk
(``audit.cache_dir``, default ``.cache/audit``), so a second audit trains nothing.
A refusal (unknown model or version, K < 1, a version that forgot nothing, data that is not
the revision's) is an ``AuditRefused``.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, tags

from flows.runners import task_runner
from medunlearn.config import load_params
from medunlearn.revision.actions import open_registry
from medunlearn.revision.audit import audited_record, banked, check_arguments
from tasks.plan_audit import plan_revision_audit
from tasks.train_reference import train_reference_model
from tasks.write_audit import write_revision_audit


@flow(name="audit", flow_run_name="audit-{model}-{version}-k{reference_models}", log_prints=True)
def audit_flow(
    params_path: str = "params.yaml",
    model: str = "classifier",
    version: str = "",
    reference_models: int = 4,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Audit ``model`` ``version`` with ``reference_models`` retrains.

    Args:
        params_path: the params file (its project holds the registry).
        model: the registered model.
        version: the version to audit.
        reference_models: K.
        epochs: the references' epochs, overriding the recipe's; None keeps it.

    Returns:
        The audit's content with ``written`` (path, committed, why_not).

    Raises:
        AuditRefused: an input that cannot give a meaningful audit.
    """
    start = time.perf_counter()
    params = load_params(params_path)
    registry = open_registry(params_path)
    plan = plan_revision_audit(registry, model, version, params, reference_models, epochs)
    inputs = (plan.bank, plan.retain_train, plan.retain_val)
    # a banked reference loads here: no Dask cluster is started just to read a file
    futures = [
        None if banked(plan, seed) else train_reference_model.submit(*inputs, seed)
        for seed in plan.seeds
    ]
    references = [
        train_reference_model(*inputs, seed) if f is None else f.result()
        for seed, f in zip(plan.seeds, futures, strict=True)
    ]
    return write_revision_audit(registry, plan, references, time.perf_counter() - start)


def run_audit(
    params_path: str,
    model: str,
    version: str,
    reference_models: int,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Refuse bad arguments before any flow starts, then run :func:`audit_flow`.

    The flow runs on ``maintain.task_runner``.

    Args:
        params_path: the params file.
        model: the registered model.
        version: the version to audit.
        reference_models: K (at least 1; LiRA needs 2).
        epochs: the references' epochs override, or None.

    Returns:
        The audit's content with ``written``.

    Raises:
        AuditRefused: bad arguments, or a version that cannot be audited.
    """
    check_arguments(reference_models, epochs)
    params = load_params(params_path)
    audited_record(open_registry(params_path), model, version)
    runner = task_runner(dict(params.get("maintain") or {}))
    with tags("medunlearn", "audit", model):
        return audit_flow.with_options(task_runner=runner)(
            params_path, model, version, reference_models, epochs
        )
