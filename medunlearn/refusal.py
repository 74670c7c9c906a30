"""Refusals: bad input or a failed gate is an answer for the user, not a crash.

A refused run prints one message naming the file, row, column or key (and the report,
where there is one) and exits non-zero. Prefect logs every failed task and flow with its
traceback; :class:`QuietRefusal` replaces those records with the one-line reason when the
exception is a refusal, and leaves every other exception's traceback alone. No Prefect
import: the filter works on the standard ``logging`` records Prefect emits.
"""

from __future__ import annotations

import logging

from medunlearn.data.manifest import ManifestError
from medunlearn.revision import GatesFailed
from medunlearn.validation import ValidationFailed

REFUSALS: tuple[type[BaseException], ...] = (ManifestError, ValidationFailed, GatesFailed)
PREFECT_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class QuietRefusal(logging.Filter):
    """Drop the traceback of a logged refusal; keep a one-line record of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, REFUSALS):
            record.exc_info, record.exc_text = None, None
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            record.msg, record.args = "refused: %s", (reason,)
        return True


def quiet_refusals() -> None:
    """Install :class:`QuietRefusal` on Prefect's flow and task run loggers (once)."""
    for name in PREFECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietRefusal) for f in logger.filters):
            logger.addFilter(QuietRefusal())
