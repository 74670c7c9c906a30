"""Refusals: bad input or a failed gate is an answer for the user, not a crash.

A refused run prints one message naming the file, row, column or key (and the report,
where there is one) and exits non-zero. Prefect logs every failed task and flow with its
traceback; :class:`QuietRefusal` replaces those records with the one-line reason when the
exception is a refusal, and leaves every other exception's traceback alone. No Prefect
import: the filter works on the standard ``logging`` records Prefect emits.
"""

from __future__ import annotations

import logging

from medunlearn.errors import Refusal, refusal_classes

PREFECT_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class QuietRefusal(logging.Filter):
    """Drop Prefect's records of a refusal (the exception with its traceback, and the
    "Finished in state Failed(...)" line that repeats it): the command prints the refusal
    once. Records of any other exception pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
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
