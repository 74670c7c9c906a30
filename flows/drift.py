"""Flow ``drift-watch``: compare the newest incoming batch with the model's training data.

The production model's training data; report, and emit ``medunlearn.data.drift.detected``
for each finding::

    medunlearn drift [--batch incoming/batch.csv] [--params params.yaml]

Steps: load-drift-inputs -> detect-drift (MMD on features, device/site, intensity;
``medunlearn/data/drift.py``) -> emit-drift-events. Reads the ``drift`` and ``maintain`` sections
(the dataset) and the registry's production version (else ``maintain.deployed``). Writes
only ``drift.report``; what a finding becomes is the ``maintenance/on-drift`` deployment's
business (``drift.on_device_drift``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from medunlearn.config import load_params, load_section, project_root
from medunlearn.data.drift import newest_manifest
from medunlearn.data.manifest import read_manifest_csv
from medunlearn.revision.ledger import active_ledger, use_project_salt
from medunlearn.revision.registry import active_registry
from medunlearn.versioning import file_sha256
from tasks.detect_drift import detect_drift
from tasks.emit_drift_events import emit_drift_events
from tasks.load_drift_inputs import load_drift_inputs


@flow(name="drift-watch", log_prints=True)
def drift_watch_flow(
    params_path: str = "params.yaml", batch: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Test the newest batch for drift against the production model's data; emit events.

    A batch whose manifest bytes and production version match the last report is not
    tested again (no second round of events for one batch) unless ``force``.

    Args:
        params_path: the params file (``drift``, ``maintain``, ``registry``, ``ledger``).
        batch: a manifest or folder of manifests (default ``drift.incoming``).
        force: test a batch checked before.

    Returns:
        ``status``: ``no batch`` (nothing delivered to ``drift.incoming`` yet),
        ``already checked`` (the last report, no events) or ``checked`` (the report:
        tests, findings, batch and its SHA-256, model and version, with the emitted
        ``events``' ids).
    """
    logger = get_run_logger()
    settings = load_section("drift", params_path)
    maintain = load_section("maintain", params_path)
    params = load_params(params_path)
    root = project_root(params_path)
    registry, why_off = active_registry(params, root)
    model_name = str((params.get("registry") or {}).get("model", "classifier"))
    checkpoint, version, forgotten = str(maintain["deployed"]), None, []
    if registry is not None:
        version = registry.current(model_name, "production")
    if version is None:
        logger.warning(
            "no production version (%s): comparing with maintain.deployed %s",
            why_off or "registry empty",
            checkpoint,
        )
    else:
        checkpoint = str(registry.production_checkpoint(model_name, version))
        applied = {r["id"] for r in registry.record(model_name, version).get("requests") or []}
        ledger = active_ledger(params, root)
        if applied and ledger is not None:  # the production model never trained on these
            use_project_salt(params, root)
            manifest = read_manifest_csv(Path(maintain["dataset"]) / "manifest.csv")
            forgotten = [
                ledger.request(e, manifest) for e in ledger.entries() if e["id"] in applied
            ]
    incoming = Path(batch or str(settings["incoming"]))
    if batch is None and not (incoming.is_file() or any(incoming.glob("*.csv"))):
        # the scheduled watch with nothing delivered yet: not an error, nothing to compare
        logger.info("no batch manifest in %s: nothing to do", incoming)
        return {"status": "no batch", "batch": str(incoming), "tests": [], "events": []}
    manifest_path = newest_manifest(incoming)
    last = Path(settings.get("report", "reports/drift.json"))
    if not force and last.is_file():
        previous = json.loads(last.read_text())
        same = previous.get("batch_sha256") == file_sha256(manifest_path)
        if same and previous.get("version") == version:
            logger.info(
                "batch %s already checked against %s: nothing to do", manifest_path, version
            )
            return {**previous, "status": "already checked", "events": []}
    inputs = load_drift_inputs(
        maintain["dataset"],
        checkpoint,
        str(manifest_path),
        forgotten,
        int(settings.get("max_images", 1000)),
        int(settings.get("seed", 0)),
    )
    report = detect_drift(inputs, model_name, version, settings)
    events = emit_drift_events(report)
    return {**report.to_dict(), "status": "checked", "events": events}
