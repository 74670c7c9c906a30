"""Step: make a finished revision folder a registered revision (or the unregistered candidate).

The folder (model files, reports) was assembled by the flow in a fresh staging path. With the
registry on (``medunlearn.revision.registry.active_registry``) it becomes ``models/<name>/<version>/``,
DVC-tracked, with its record and card committed and GTO tags; otherwise (registry off,
inside a DVC stage) it replaces ``candidate_dir`` as one rename. The card is also published
as a Prefect markdown artifact under a stable key (``revision-card-<model>``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from medunlearn.atomic import staged_directory
from medunlearn.revision.card import card_files
from medunlearn.revision.registry import Registry


@task(name="register-revision", cache_policy=NO_CACHE)
def register_revision(
    folder: str,
    record: dict[str, Any],
    registry: Registry | None,
    model_name: str,
    version: str | None,
    stages: tuple[str, ...],
    candidate_dir: str | None = None,
    before_commit: Any = None,
    ledger_entry: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """Register ``folder`` (moved, not copied) as ``version`` (planned by the flow with
    ``Registry.next_version``); returns the record (``version`` None when unregistered, then
    ``files`` is ``candidate_dir``)."""
    logger = get_run_logger()
    if registry is None:
        if candidate_dir is None:
            raise ValueError("no registry and no candidate_dir: nowhere to put the revision")
        full = {**record, "model": model_name, "version": None, "files": candidate_dir}
        with staged_directory(candidate_dir) as stage:
            for path in Path(folder).iterdir():
                path.rename(stage / path.name)
            markdown, text = card_files(full, [])
            (stage / "card.md").write_text(markdown)
            (stage / "card.json").write_text(text)
        logger.info("revision written to %s (not registered)", candidate_dir)
        _publish(model_name, markdown)
        return full
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    history = [
        {"stage": s, "by": "medunlearn", "at": now, "why": "registered by the pipeline"}
        for s in stages
    ]
    full = registry.register(
        model_name,
        Path(folder),
        record,
        version,
        stages,
        card=lambda r: card_files(r, history),
        before_commit=before_commit,
        ledger_entry=ledger_entry,
    )
    logger.info(
        "registered %s %s (%s)%s",
        model_name,
        full["version"],
        ", ".join(stages),
        "" if full["pushed"] else f"; unpushed: run `{full['push_command']}`",
    )
    card_md = (registry.record_dir(model_name, full["version"]) / "card.md").read_text()
    _publish(model_name, card_md)
    return full


def _publish(model_name: str, markdown: str) -> None:
    key = "revision-card-" + re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    create_markdown_artifact(key=key, markdown=markdown, description="revision card")
