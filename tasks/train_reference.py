"""Step: one reference model of a revision audit.

A mapped task per seed, so a Dask runner spreads them over its workers.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.images import LabelledImages
from medunlearn.models.bank import ModelBank
from medunlearn.revision.audit import Reference, train_reference


@task(
    name="train-reference",
    task_run_name="train-reference-seed{seed}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def train_reference_model(
    bank: ModelBank, train: LabelledImages, val: LabelledImages, seed: int
) -> Reference:
    """A retrain on retain-train with ``seed``, from the model bank when it holds one.

    On a Dask worker torch uses the worker's thread count (one, on the local cluster of
    ``flows.runners.task_runner``), so workers do not oversubscribe the cores.

    Args:
        bank: the audit's model bank (its on-disk cache is the real cache; no Prefect one).
        train: retain-train (every forgotten row left out).
        val: the retained validation rows (best epoch).
        seed: the reference's seed.

    Returns:
        The reference model, its cost and whether it came from the bank.
    """
    try:
        import torch
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except (ImportError, ValueError):  # not on a Dask worker: leave the process's setting
        pass
    reference = train_reference(bank, train, val, seed)
    get_run_logger().info(
        "reference seed %d: %s",
        seed,
        "from the cache" if reference.cached else f"trained in {reference.seconds:.1f} s",
    )
    return reference
