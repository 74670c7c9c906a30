"""Free text a person types must not carry a patient identifier into shared records.

A promotion's or rollback's ``--why``, a rollback's ``--allow-regression`` reason and a
rejection's ``--why`` are written into git tags, the registry's history and the forget
ledger, which travel with the repository. Everything else medunlearn writes holds ids only
as tokens; this is the one path where a person could paste a raw id (``rolled back: P0529
withdrew consent``). :func:`check_free_text` refuses such text before anything is written.

What is recognised as an identifier, with no false alarm on ordinary words:

- any id the forget ledger holds a token of (``patient_ids`` / ``image_ids`` of every
  request): each word of the text is tokenised with the ledger's salt and compared, so the
  raw ids never need to be on disk;
- any ``patient_id`` in the project's dataset manifest (``maintain.dataset``) with at least
  4 characters and a digit (short or digit-free values, such as ``12`` or ``left``, are
  ordinary words too often to be refused on sight).

No library does this check (it needs the ledger's salted tokens), hence the few lines here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medunlearn.config import load_params, project_root
from medunlearn.errors import Refusal
from medunlearn.revision.ledger import active_ledger

WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*[A-Za-z0-9]|[A-Za-z0-9]")


class IdentifierInText(Refusal, ValueError):
    """Free text names a patient or image identifier; the message names the field only."""


def words(text: str) -> list[str]:
    """Split free text into the candidate identifiers it may hold.

    Args:
        text: the free text (None or empty: no words).

    Returns:
        runs of letters, digits and ``_ . -`` (ends trimmed of punctuation), in text order,
        each followed by its parts split on ``_ . -`` when it has more than one.
    """
    found: list[str] = []
    for word in WORD.findall(text or ""):
        found.append(word)
        parts = [p for p in re.split(r"[_.\-]", word) if p]
        if len(parts) > 1:
            found.extend(parts)
    return found


def ledger_tokens(ledger: Any) -> set[str]:
    """Collect every id token the ledger's requests hold.

    Args:
        ledger: a ``medunlearn.revision.ledger.Ledger`` (anything with ``entries()``).

    Returns:
        the ``h-...`` tokens under ``patient_ids`` and ``image_ids`` of every entry, all
        models and statuses included.
    """
    tokens: set[str] = set()
    for entry in ledger.entries():
        selector = entry.get("selector") or {}
        for key in ("patient_ids", "image_ids"):
            tokens.update(str(t) for t in selector.get(key) or [])
    return tokens


def manifest_patient_ids(manifest_path: str | Path) -> set[str]:
    """Read the ``patient_id`` values of a manifest that look like ids.

    Args:
        manifest_path: the dataset's ``manifest.csv``.

    Returns:
        the values of at least 4 characters holding a digit; empty when the file is absent,
        unreadable or has no ``patient_id`` column.
    """
    import pandas as pd

    path = Path(manifest_path)
    if not path.is_file():
        return set()
    try:
        column = pd.read_csv(path, usecols=["patient_id"], dtype=str)["patient_id"]
    except (ValueError, OSError, pd.errors.ParserError):  # no such column, unreadable
        return set()
    return {v for v in column.dropna() if len(v) >= 4 and any(c.isdigit() for c in v)}


def check_free_text(
    fields: dict[str, str | None],
    known_ids: Iterable[str] = (),
    ledger: Any | None = None,
) -> None:
    """Refuse free text that names a known patient or image identifier.

    Args:
        fields: option name (``--why``) -> the text given (``None`` or empty: skipped).
        known_ids: raw identifiers to look for (e.g. :func:`manifest_patient_ids`).
        ledger: a ``medunlearn.revision.ledger.Ledger`` whose salted id tokens are looked for.

    Raises:
        IdentifierInText: a field holds one (matched whatever its case); the message names
            the field, never the id.
        LedgerError: from ``ledger.salt()``, the ledger holds tokens but its salt is missing.
    """
    known = set(known_ids)
    tokens = ledger_tokens(ledger) if ledger is not None else set()
    salt = ledger.salt() if tokens else None
    known = {k.casefold() for k in known}
    for name, text in fields.items():
        for word in words(text or ""):
            # ids are matched whatever their case ("p0529" is P0529): the ledger's tokens
            # are of the id as written, so each common casing is tried
            spellings = {word, word.upper(), word.lower(), word.capitalize()}
            if word.casefold() in known or (
                tokens and any(ledger.token(w, salt) in tokens for w in spellings)
            ):
                raise IdentifierInText(
                    f"{name} names a patient or image identifier; write the reason without "
                    "it (it is stored in git tags and the ledger, which are shared)"
                )


def check_project_text(params_path: str, fields: dict[str, str | None]) -> None:
    """Run :func:`check_free_text` against the project's own identifiers.

    Those of the project's ledger (when enabled and written) and the patient ids of its
    ``maintain.dataset`` manifest (when prepared).

    Args:
        params_path: the project's ``params.yaml`` (its folder is the project root).
        fields: option name (``--why``) -> the text given; nothing is read when all are
            empty.

    Raises:
        IdentifierInText: as :func:`check_free_text`.
    """
    if not any(fields.values()):
        return
    params = load_params(params_path)
    root = project_root(params_path)
    ledger = active_ledger(params, root)
    if ledger is not None and not ledger.path.is_file():
        ledger = None
    dataset = (params.get("maintain") or {}).get("dataset")
    known = manifest_patient_ids(root / dataset / "manifest.csv") if dataset else set()
    check_free_text(fields, known, ledger)
