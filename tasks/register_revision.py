"""Step: make a finished revision folder a registered revision (or the unregistered candidate).

The folder (model files, reports) was assembled by the flow in a fresh staging path. With the
registry on (``medunlearn.revision.registry.active_registry``) it becomes ``models/<name>/<version>/``,
DVC-tracked, with its record and card committed and GTO tags; otherwise (registry off,
inside a DVC stage) it replaces ``candidate_dir`` as one rename. The card is also published
as a Prefect markdown artifact under a stable key (``revision-card-<model>``), and its HTML
report (``report.html`` next to the card) as a link artifact (``revision-report-<model>``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from medunlearn.atomic import staged_directory
from medunlearn.revision.card import card_files
from medunlearn.revision.registry import Registry
from medunlearn.revision.report import report_inputs


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
    """Register ``folder`` (moved, not copied) as ``version``, or make it the unregistered candidate.

    The card's files (``card.md``, ``card.json``, ``report.html``) are written next to the
    record; the report takes the validation results and the trade-off plot from the
    folder's ``reports/`` (read before the folder moves). The card is published as a
    markdown artifact and the report as a link artifact (its ``file://`` address).

    Args:
        folder: the assembled revision (model files and ``reports/``).
        record: what the flow records (``medunlearn.revision.records.unlearned_record``).
        registry: the project's registry, or None (registry off, or inside a DVC stage).
        model_name: the registered model's name.
        version: the version planned with ``Registry.next_version``.
        stages: the stages it is assigned (``candidate``, maybe ``staging``).
        candidate_dir: where an unregistered revision goes (``maintain.candidate_dir``).
        before_commit: the registry's pre-commit hook (the forget ledger), or None.
        ledger_entry: the ledger file and request id the revision applies, or None.

    Returns:
        The full record (``version`` None when unregistered, then ``files`` is
        ``candidate_dir``).

    Raises:
        ValueError: no registry and no ``candidate_dir``.
    """
    logger = get_run_logger()
    validation, plot_png = report_inputs(Path(folder), record)
    if registry is None:
        if candidate_dir is None:
            raise ValueError("no registry and no candidate_dir: nowhere to put the revision")
        full = {**record, "model": model_name, "version": None, "files": candidate_dir}
        files = card_files(full, [], validation=validation, plot_png=plot_png)
        with staged_directory(candidate_dir) as stage:
            for path in Path(folder).iterdir():
                path.rename(stage / path.name)
            for name, text in files.items():
                (stage / name).write_text(text)
        logger.info("revision written to %s (not registered)", candidate_dir)
        _publish(model_name, None, files["card.md"], Path(candidate_dir) / "report.html")
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
        card=lambda r: card_files(r, history, validation=validation, plot_png=plot_png),
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
    rec_dir = registry.record_dir(model_name, full["version"])
    _publish(
        model_name, full["version"], (rec_dir / "card.md").read_text(), rec_dir / "report.html"
    )
    return full


def _publish(model_name: str, version: str | None, markdown: str, report: Path) -> None:
    """Publish the card (markdown) and the HTML report (a link) under stable keys per model.

    Keys: ``revision-card-<model>`` and ``revision-report-<model>``.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    create_markdown_artifact(
        key=f"revision-card-{slug}", markdown=markdown, description="revision card"
    )
    if report.is_file():  # the same revision again registers nothing new (no card written)
        create_link_artifact(
            key=f"revision-report-{slug}",
            link=report.resolve().as_uri(),
            link_text=f"{model_name} {version or 'unregistered'}: revision report (HTML)",
            description="the revision's HTML report: card, gates and caveats, validation, plot",
        )
