"""Step: composition candidates from the sweep (swap and interpolation, engine issue)."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medunlearn.data.request import Cohorts
from medunlearn.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from medunlearn.revision.candidates import failed_run
from medunlearn.unlearn.compose import fine_tune, interpolate, swap
from medunlearn.unlearn.methods import (
    Diverged,
    check_finite,
    check_outputs,
    forget_target,
    selection_score,
)
from medunlearn.versioning import file_sha256


def load_run(run: dict[str, Any]):
    """A sweep run's model, refusing a checkpoint that changed since the run wrote it.

    Args:
        run: a candidate record (``name``, ``checkpoint``, ``sha256``).

    Returns:
        ``(model, meta)`` from :func:`~medunlearn.models.checkpoint.load_checkpoint`
        (the model in eval mode on CPU).

    Raises:
        CheckpointError: the checkpoint's SHA-256 differs from the one the run recorded.
    """
    if file_sha256(run["checkpoint"]) != run["sha256"]:
        raise CheckpointError(
            f"{run['checkpoint']}: changed since {run['name']} wrote it; re-run with refresh"
        )
    return load_checkpoint(run["checkpoint"])


@task(name="compose-candidates", cache_policy=NO_CACHE)
def compose_candidates(
    runs: list[dict[str, Any]], cohorts: Cohorts, cfg: dict[str, Any], work_dir: str
) -> list[dict[str, Any]]:
    """Composition candidates: a swap of two sweep runs and interpolations between them.

    Swap: features of the run that retained best, head of the run that forgot best (both
    judged on validation rows by ``selection_score``), head fine-tuned on retain-train;
    then a weight interpolation between the two runs per ``alpha``. Skipped (no
    candidates) when disabled, with fewer than 2 runs, or when one run is best at both.

    Args:
        runs: the sweep's finished, finite candidate records (the flow drops diverged
            ones): ``name``, ``checkpoint``, ``sha256``.
        cohorts: the request's cohorts.
        cfg: ``maintain.compose``: ``enabled``, ``alphas`` (interpolation weights in
            [0, 1]), ``fine_tune_epochs``, ``fine_tune_lr``, ``forget_target``, ``seed``.
        work_dir: the folder composed checkpoints are written to (``<name>.pt``).

    Returns:
        Candidate records like the sweep's (``name``, ``kind``, ``checkpoint``,
        ``sha256``, ``config``, ``seconds``: wall time of the composition); a composed model
        whose weights or outputs are not finite comes back as a ``failed`` record with no
        checkpoint.

    Raises:
        CheckpointError: a run's checkpoint changed since the run wrote it (raised by
            :func:`load_run`).
    """
    logger = get_run_logger()
    if not cfg.get("enabled", True) or len(runs) < 2:
        why = "disabled" if not cfg.get("enabled", True) else f"{len(runs)} finished run(s)"
        logger.info("composition skipped (%s)", why)
        return []
    target = forget_target(cohorts.request.reason, cfg.get("forget_target", "auto"))
    models = {r["name"]: load_run(r) for r in runs}
    scores = {n: selection_score(m, cohorts, target, 1.0) for n, (m, _) in models.items()}
    best_retain = max(scores, key=lambda n: scores[n]["retain_val"])
    best_forget = min(scores, key=lambda n: abs(scores[n]["forget"] - scores[n]["goal"]))
    if best_retain == best_forget:
        logger.info("composition skipped: %s both retained and forgot best", best_retain)
        return []
    (a, meta), (b, _) = models[best_retain], models[best_forget]
    out = []

    def save(name: str, kind: str, model, extra: dict[str, Any], seconds: float) -> None:
        config = {"features": best_retain, "head": best_forget, **extra}
        try:
            check_finite(model, f"{kind} of {best_retain} + {best_forget}")
            check_outputs(model, cohorts, f"{kind} of {best_retain} + {best_forget}")
        except Diverged as exc:
            logger.warning("%s failed: %s", name, exc)
            out.append({**failed_run(name, kind, config, exc), "failed": True})
            return
        path = f"{work_dir}/{name}.pt"
        meta.extra = {**meta.extra, "composition": f"{kind} {best_retain} + {best_forget}"}
        save_checkpoint(path, model, meta)
        out.append(
            {
                "name": name,
                "kind": kind,
                "checkpoint": path,
                "sha256": file_sha256(path),
                "config": config,
                "seconds": round(seconds, 3),
            }
        )

    start = time.perf_counter()
    swapped = swap(a, b)
    epochs = int(cfg.get("fine_tune_epochs", 1))
    if epochs:
        swapped = fine_tune(
            swapped,
            cohorts.retain_train,
            epochs=epochs,
            lr=float(cfg.get("fine_tune_lr", 1e-3)),
            seed=int(cfg.get("seed", 0)),
        )
    save("swap", "swap", swapped, {"fine_tune_epochs": epochs}, time.perf_counter() - start)
    for alpha in cfg.get("alphas", [0.5]):
        start = time.perf_counter()
        mixed = interpolate(a, b, float(alpha), cohorts.retain_train)
        save(
            f"interp-{alpha}",
            "interpolate",
            mixed,
            {"alpha": float(alpha)},
            time.perf_counter() - start,
        )
    logger.info(
        "composed %d candidates (%d failed) from %s (retain) and %s (forget)",
        sum(not c.get("failed") for c in out),
        sum(bool(c.get("failed")) for c in out),
        best_retain,
        best_forget,
    )
    return out
