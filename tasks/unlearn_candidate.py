"""Step: one unlearning run of the sweep (a mapped task per config), cached on its inputs.

The cache key is everything that determines the result: the config, the deployed model's
file hash, the data manifest's hash, the request hash, the source hash of the whole core
package (``medunlearn/``: a fix to a method invalidates its old results) and this task's
source. The model and images themselves are left out of the key (they are identified by
those hashes). A finished
run's result (checkpoint path + hash, JSON) is persisted, so a re-run after a crash reuses
it instead of recomputing; a checkpoint that changed on disk is detected, not trusted.

Results and cache records live under the run's ``work_dir`` (``with_local_cache``), next to
the checkpoints they point at: a cache shared across checkouts (Prefect's default, under
``PREFECT_HOME``) would hand a fresh clone a record whose checkpoint is not there.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from medunlearn.data.request import Cohorts
from medunlearn.models.checkpoint import CheckpointMeta, save_checkpoint
from medunlearn.unlearn.methods import run_method
from medunlearn.versioning import file_sha256
from tasks.load_revision_inputs import RevisionInputs


def config_key(config: dict[str, Any]) -> str:
    """A short stable name of a config, used in checkpoint file names.

    Args:
        config: the run's settings (JSON-ready; others via ``str``).

    Returns:
        The first 12 hex digits of the SHA-256 of its JSON with sorted keys.
    """
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


CACHE_POLICY = (INPUTS + TASK_SOURCE) - "inputs" - "cohorts"


@task(
    name="unlearn-candidate",
    cache_policy=CACHE_POLICY,
    persist_result=True,
    result_serializer="json",
)
def unlearn_candidate(
    inputs: RevisionInputs,
    cohorts: Cohorts,
    name: str,
    config: dict[str, Any],
    work_dir: str,
    deployed_sha256: str,
    data_fingerprint: str,
    request_hash: str,
    core_hash: str = "",
) -> dict[str, Any]:
    """Run ``config['method']`` with the rest of ``config`` on the deployed model; save it.

    The four hashes are passed explicitly so they enter the cache key (``inputs`` and
    ``cohorts`` are left out of it).

    Args:
        inputs: the revision's inputs (the deployed model and its checkpoint metadata).
        cohorts: the request's cohorts.
        name: the candidate's name (the checkpoint is ``<work_dir>/<name>-<key>.pt``).
        config: ``method`` and its settings.
        work_dir: the revision's work folder.
        deployed_sha256: the deployed checkpoint's SHA-256.
        data_fingerprint: the dataset's content hash.
        request_hash: the forget request's hash.
        core_hash: the source hash of the core package.

    Returns:
        The candidate record: ``name``, ``config``, ``checkpoint``, ``sha256``,
        ``seconds`` (wall time of the method), ``info`` (what the method reported) and
        ``finished_at`` (Unix time, seconds).
    """
    logger = get_run_logger()
    settings = {k: v for k, v in config.items() if k != "method"}
    start = time.perf_counter()
    model = run_method(config["method"], inputs.deployed, cohorts, settings)
    seconds = time.perf_counter() - start
    key = config_key(
        {
            **config,
            "model": deployed_sha256,
            "data": data_fingerprint,
            "request": request_hash,
            "core": core_hash,
        }
    )
    path = f"{work_dir}/{name}-{key}.pt"
    meta = CheckpointMeta(
        architecture=dict(inputs.deployed_meta.architecture),
        class_names=list(inputs.deployed_meta.class_names),
        input_shape=list(inputs.deployed_meta.input_shape),
        normalization=model.cpu().norm.statistics(),
        data_version=inputs.deployed_meta.data_version,
        augmentation=inputs.deployed_meta.augmentation,
        extra={
            "request": request_hash,
            "config": json.dumps(config, sort_keys=True),
            "parent_sha256": deployed_sha256,
        },
    )
    save_checkpoint(path, model.cpu(), meta)
    logger.info("%s (%s) finished in %.1fs -> %s", name, config["method"], seconds, path)
    return {
        "name": name,
        "config": config,
        "checkpoint": path,
        "sha256": file_sha256(path),
        "seconds": round(seconds, 3),
        "info": json.loads(json.dumps(getattr(model, "unlearn_info", {}) or {}, default=str)),
        "finished_at": time.time(),
    }


def with_local_cache(work_dir: str, refresh: bool = False) -> Task:
    """The task with its results and cache records stored under ``work_dir/results``.

    Args:
        work_dir: the revision's work folder (``results`` is created in it).
        refresh: recompute instead of reusing cached results.

    Returns:
        :func:`unlearn_candidate` with those options.
    """
    store = Path(work_dir).resolve() / "results"
    store.mkdir(parents=True, exist_ok=True)
    return unlearn_candidate.with_options(
        refresh_cache=refresh,
        result_storage=store,  # a Path: local storage, no server-side block needed
    )


def run_is_intact(run: dict[str, Any]) -> bool:
    """Whether a (possibly cached) run's checkpoint is on disk with the hash it was saved with.

    Args:
        run: a candidate record (``checkpoint``, ``sha256``).

    Returns:
        True when the file exists and its SHA-256 matches.
    """
    path = Path(run["checkpoint"])
    return path.is_file() and file_sha256(path) == run["sha256"]
