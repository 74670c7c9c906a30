"""One base for every user-facing refusal.

A :class:`Refusal` is an answer for the user, not a crash: bad input (a manifest, an image,
a request, a checkpoint), a bad setting, or a rule that says no (gates, registry, ledger).
Its message names the file, row, column or key. The command line prints it as one line and
exits with ``exit_code`` (1; 2 is kept for usage errors), never with a traceback; Prefect's
logs of it are quietened (``cli/refusal.py``). Any other exception is a bug or an
environment fault and keeps its traceback.

Each module keeps its own error class (``ManifestError``, ``GatesFailed``, ...), derived
from this one and from the built-in it always was (``ValueError``, ``RuntimeError``), so
existing ``except`` clauses keep working.
"""

from __future__ import annotations


class Refusal(Exception):
    """A refusal the user can act on; ``str(exc)`` is the one line the CLI prints."""

    exit_code: int = 1


def refusal_classes() -> list[type[Refusal]]:
    """Every subclass of :class:`Refusal` imported so far (for matching log text).

    Returns:
        The subclasses at any depth, each once, in no particular order (only the modules
        imported so far have defined theirs).
    """
    found: list[type[Refusal]] = []
    todo = list(Refusal.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return found
