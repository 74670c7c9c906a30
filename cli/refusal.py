"""Refusals said once: Prefect's log records of a refusal are replaced by the command's line.

A refused run prints one message naming the file, row, column or key and exits 1. Prefect
logs every failed task and flow with its traceback; :class:`QuietRefusal` drops those
records when the exception is a :class:`~medunlearn.errors.Refusal`, and leaves every other
exception's traceback alone. It works on the standard ``logging`` records Prefect emits (no
Prefect import), installed by the command line before any flow runs.
"""

from __future__ import annotations

import logging

from medunlearn.errors import Refusal, refusal_classes

PREFECT_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class QuietRefusal(logging.Filter):
    """Drop Prefect's records of a refusal; others pass untouched.

    The records dropped: the exception with its traceback, and the "Finished in state
    Failed(...)" line that repeats it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is logged.

        Args:
            record: a log record of Prefect's flow or task run loggers.

        Returns:
            False for a record of a refusal, True otherwise.
        """
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Refusal):
            return False
        if record.exc_info is None and "Finished in state Failed" in str(record.msg):
            text = record.getMessage()
            return not any(f"{kind.__name__}:" in text for kind in refusal_classes())
        return True


def quiet_refusals() -> None:
    """Install :class:`QuietRefusal` on Prefect's flow and task run loggers (once)."""
    for name in PREFECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietRefusal) for f in logger.filters):
            logger.addFilter(QuietRefusal())
