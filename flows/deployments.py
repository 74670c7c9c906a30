"""The Prefect deployments that run the pipeline without a person: ``medunlearn serve``.

    medunlearn serve [--params params.yaml]

- ``maintenance/scheduled``: cron ``schedule.maintenance_cron``; every pending request of
  the forget ledger (none: a successful "nothing to do" run that touches no file).
- ``drift-watch/scheduled``: cron ``schedule.drift_cron``; the newest batch in
  ``drift.incoming`` against the production model's training data.
- ``maintenance/on-drift``: a ``DeploymentEventTrigger`` on ``medunlearn.data.drift.detected``;
  the event's payload becomes the run's ``drift`` parameter, the rule is
  ``drift.on_device_drift``.

Defined in Python with ``flow.to_deployment`` + ``prefect.serve`` rather than
``prefect.yaml``: the crons and the task runner come from ``params.yaml`` (the single source
of settings), the served process runs the flows in this checkout (no work pool or image to
build for a CPU deployment), and the definitions are importable and testable. A hospital
that runs workers on GPUs deploys the same flows to a work pool instead (README, "Scale").
The serving process must run in the project root: params and data paths are relative.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.drift import drift_watch_flow
from flows.maintenance import maintenance_flow
from flows.runners import task_runner
from medunlearn.config import ConfigError, load_params
from medunlearn.data.drift import EVENT

DEPLOYMENTS = ("maintenance/scheduled", "drift-watch/scheduled", "maintenance/on-drift")


def build_deployments(params_path: str = "params.yaml") -> list[Any]:
    """The three deployments (:data:`DEPLOYMENTS`), from the params file's sections.

    Args:
        params_path: the params file (``schedule``: crons, timezone; ``maintain``: the task
            runner; ``registry.model``: the model the drift trigger matches).

    Returns:
        ``RunnerDeployment`` objects: ``maintenance/scheduled``, ``drift-watch/scheduled``
        and ``maintenance/on-drift``.

    Raises:
        ConfigError: ``schedule.maintenance_cron`` or ``schedule.drift_cron`` is not set.
    """
    params = load_params(params_path)
    schedule = dict(params.get("schedule") or {})
    for key in ("maintenance_cron", "drift_cron"):
        if not schedule.get(key):
            raise ConfigError(f"{params_path}: schedule.{key} is not set")
    timezone = str(schedule.get("timezone", "UTC"))
    maintenance = maintenance_flow.with_options(
        task_runner=task_runner(dict(params.get("maintain") or {}))
    )
    model = str((params.get("registry") or {}).get("model", "classifier"))
    return [
        maintenance.to_deployment(
            name="scheduled",
            schedule=Cron(str(schedule["maintenance_cron"]), timezone=timezone),
            parameters={"params_path": params_path, "pending": True},
            description="every pending forget request of the ledger",
            tags=["medunlearn", "revise", "scheduled", model],
        ),
        drift_watch_flow.to_deployment(
            name="scheduled",
            schedule=Cron(str(schedule["drift_cron"]), timezone=timezone),
            parameters={"params_path": params_path},
            description="newest incoming batch vs the production model's training data",
            tags=["medunlearn", "drift", "scheduled", model],
        ),
        maintenance.to_deployment(
            name="on-drift",
            triggers=[
                DeploymentEventTrigger(
                    name=f"{EVENT} -> maintenance/on-drift",
                    expect={EVENT},
                    # vanished devices only: the rule turns no other finding into a
                    # request, and each run would cost a process start-up (drift-watch
                    # already records every finding: report, artifacts, events)
                    match={
                        "prefect.resource.id": f"medunlearn.model.{model}",
                        "medunlearn.attribute": "device",
                        "medunlearn.kind": "vanished",
                    },
                    parameters={"params_path": params_path, "drift": "{{ event.payload }}"},
                )
            ],
            description="what a drift finding becomes under drift.on_device_drift",
            tags=["medunlearn", "revise", "on-drift", model],
        ),
    ]


class AtCapacityThrottle(logging.Filter):
    """Let Prefect's "(at capacity)" log records through once per ``seconds``.

    Prefect's runner logs "N scheduled runs skipped (at capacity)" at every poll
    (``schedule.poll_seconds``) while a run executes, i.e. every 2 s through a revision:
    each distinct message passes once per ``seconds``; every other record passes.

    Args:
        seconds: the shortest interval between two passes of one message (seconds).
        clock: the time source (seconds; monotonic).
    """

    def __init__(self, seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.seconds, self.clock = seconds, clock
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether a record is logged.

        Args:
            record: a log record.

        Returns:
            False for an "(at capacity)" message that passed less than ``seconds`` ago;
            True otherwise.
        """
        if "(at capacity)" not in str(record.msg):
            return True
        message, now = record.getMessage(), self.clock()
        if now - self.last.get(message, -float("inf")) < self.seconds:
            return False
        self.last[message] = now
        return True


def serve(params_path: str = "params.yaml", limit: int | None = None) -> None:
    """Serve the deployments until interrupted (blocks).

    Args:
        params_path: the params file, in the project root (``schedule``:
            ``max_concurrent_runs``, ``poll_seconds``).
        limit: the most runs at once (default ``schedule.max_concurrent_runs``, 1).

    Raises:
        ConfigError: the params file is not found, or a cron is not set (raised by
            :func:`build_deployments`).
    """
    from prefect import serve as prefect_serve

    logging.getLogger("prefect.runner").addFilter(AtCapacityThrottle())

    if not Path(params_path).is_file():
        raise ConfigError(f"{params_path}: params file not found (run in the project root)")
    schedule = dict(load_params(params_path).get("schedule") or {})
    prefect_serve(
        *build_deployments(params_path),
        limit=limit or int(schedule.get("max_concurrent_runs", 1)),
        query_seconds=float(schedule.get("poll_seconds", 2)),
    )
