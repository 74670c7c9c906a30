"""The forget ledger: every forget request the project received, and what became of it.

``ledger/requests.jsonl`` (git-versioned, one JSON line per request): ``id``, ``reason``, the
selector with every patient and image id replaced by a **salted** token, ``fraction`` and
``seed``, ``received_at``, and ``status``: ``pending``, ``applied in VERSION``,
``rejected: REASON`` (its gates or its data refused it, or a reviewer did) or
``failed: STEP (ERROR)`` (the run crashed in STEP). Only ``pending`` requests are revised
by a run without ``--request``: a rejected or failed one is retried only when asked
(submitted again: ``revise --request FILE`` or ``request add FILE`` makes it pending).
Free-text notes are not stored (they may name a patient).

Why salted: patient ids are short and guessable (``P0529``), so a plain hash can be reversed
by trying every id. The salt (``ledger/salt``, 32 random bytes) is kept out of git and, in
a DVC project, tracked by DVC (``ledger/salt.dvc``), so it travels through the DVC remote
with the clinical data it protects (same access control), never through the git history.

A later revision keeps every earlier forgetting: :meth:`Ledger.carried` rebuilds each
applied request from its tokens by hashing the manifest's own ids with the salt (the raw
ids exist only in memory), and the maintenance flow re-checks each one's gates.
:func:`split_carried` sorts them by the parent's registry record: a request the parent
applied is *inherited* (its rows are kept out of every cohort, not unlearned again), one it
did not apply (e.g. applied only in a version never promoted) is forgotten again. Written
here because no library keeps a consent ledger; the file format is plain JSON lines so it
diffs in git.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from medunlearn.atomic import write_text
from medunlearn.data.manifest import set_identifier_salt
from medunlearn.data.request import ForgetRequest, RequestError
from medunlearn.errors import Refusal

ID_KEYS = {"patient_ids": "patient_id", "image_ids": "image_id"}
TOKEN_PREFIX = "h-"


class LedgerError(Refusal, RuntimeError):
    """The ledger cannot do what was asked (missing salt, unknown id); the message says why."""


class AlreadyApplied(LedgerError):
    """The request was already applied in a revision: nothing to do (not a failure)."""


class Ledger:
    """The request ledger at ``path`` with its salt at ``salt_path``.

    Args:
        path: the JSON-lines ledger file (absent until the first request).
        salt_path: the salt file (default: ``salt`` next to ``path``).
        model: the registered model this ledger serves (``registry.model``): its new entries
            name it, and only its own entries (and those naming no model) are pending,
            applied or carried for it; None: every entry.
    """

    def __init__(
        self,
        path: str | Path = "ledger/requests.jsonl",
        salt_path: str | Path | None = None,
        model: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.salt_path = Path(salt_path) if salt_path else self.path.with_name("salt")
        # the registered model this ledger serves (``registry.model``): its new entries name
        # it, and only its own entries (and entries naming no model, written before models
        # were named) are pending, applied or carried for it; None: every entry
        self.model = model

    def mine(self, entry: dict[str, Any]) -> bool:
        """Tell whether an entry concerns this ledger's model.

        Args:
            entry: a ledger entry (one parsed line).

        Returns:
            True when the ledger has no ``model``, or the entry names none or this one.
        """
        return self.model is None or entry.get("model") in (None, self.model)

    # --- salt and tokens -----------------------------------------------------------------
    def salt(self, create: bool = False) -> bytes:
        """Read the project's salt, making it when asked and safe.

        A new salt is 32 random bytes written as 64 hex characters, kept out of git
        (``.gitignore``).

        Args:
            create: make the salt when it is absent, unless a ``<salt>.dvc`` file shows that
                one exists on the DVC remote (a new salt would orphan every token).

        Returns:
            the HMAC key: the salt file's text (stripped), UTF-8 encoded.

        Raises:
            LedgerError: the salt is missing and may not be created (the message says how to
                fetch it: ``dvc pull`` or the project's DVC remote).
        """
        if not self.salt_path.is_file():
            tracked = Path(f"{self.salt_path}.dvc")
            if not create or tracked.is_file():  # a new salt would orphan every token
                fix = (
                    f"`dvc pull {tracked}`"
                    if tracked.is_file()
                    else "restore it from the project's DVC remote"
                )
                raise LedgerError(
                    f"{self.salt_path}: the ledger's salt is missing; fetch it with {fix} "
                    f"(it is never in git)"
                )
            self.salt_path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.salt_path, secrets.token_hex(32) + "\n")
            _ignore(self.salt_path)
        return self.salt_path.read_text().strip().encode()

    def token(self, value: object, salt: bytes | None = None) -> str:
        """Tokenise one identifier: HMAC-SHA256 under the project's salt.

        Args:
            value: the identifier (its ``str``), e.g. a patient or image id.
            salt: the key (default: :meth:`salt`, read once per call).

        Returns:
            ``h-`` followed by the first 16 hex digits (64 bits) of the HMAC.

        Raises:
            LedgerError: from :meth:`salt`, no ``salt`` given and the salt file is missing.
        """
        key = salt if salt is not None else self.salt()
        return TOKEN_PREFIX + hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:16]

    # --- entries -------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Read every entry, all models included.

        Returns:
            the parsed lines in file order (oldest first); empty when the file is absent.

        Raises:
            LedgerError: a line is not JSON (the message names the file and line number).
        """
        if not self.path.is_file():
            return []
        out = []
        for n, line in enumerate(self.path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as exc:
                    raise LedgerError(f"{self.path}: line {n} is not JSON ({exc})") from exc
        return out

    def pending(self) -> list[dict[str, Any]]:
        """List this model's pending entries.

        Returns:
            the entries with status ``pending`` that :meth:`mine` accepts, oldest first.
        """
        return [e for e in self.entries() if self.mine(e) and e["status"] == "pending"]

    def applied(self) -> list[dict[str, Any]]:
        """List this model's applied entries (each carried by its later revisions).

        Returns:
            the entries with status ``applied in VERSION`` that :meth:`mine` accepts, in file
            order.
        """
        return [e for e in self.entries() if self.mine(e) and e["status"].startswith("applied in ")]

    def _body(self, request: ForgetRequest, salt: bytes) -> tuple[str, dict[str, Any]]:
        """The entry id and body of ``request`` (ids tokenised): one request, one id."""
        selector = {
            k: sorted(self.token(v, salt) for v in values) if k in ID_KEYS else values
            for k, values in request.selector.items()
        }
        body = {
            "reason": request.reason,
            "selector": selector,
            "fraction": request.fraction,
            "seed": request.seed,
        }
        if self.model is not None:  # the same request for two models: two entries
            body["model"] = self.model
        canonical = json.dumps(body, sort_keys=True)
        return "req-" + self.token(canonical, salt)[len(TOKEN_PREFIX) :], body

    def find(self, request: ForgetRequest) -> dict[str, Any] | None:
        """Find a request's entry; reads only (no salt is created).

        Args:
            request: the forget request (raw ids), tokenised to its entry id.

        Returns:
            the entry with that id, or None when the ledger (or its salt) has none.
        """
        if not self.salt_path.is_file():
            return None
        entry_id, _ = self._body(request, self.salt())
        return next((e for e in self.entries() if e["id"] == entry_id), None)

    def add(self, request: ForgetRequest, received_at: str | None = None) -> dict[str, Any]:
        """Append a request as pending; the same request twice is the same entry.

        A request added again after ``rejected: ...`` or ``failed: ...`` becomes pending
        again (its earlier status kept in ``history``). Creates the salt if it is new.

        Args:
            request: the forget request (raw ids; only their tokens are written).
            received_at: ISO 8601 time of receipt (default: now, UTC, whole seconds).

        Returns:
            the entry as stored: ``id``, ``reason``, the tokenised ``selector``,
            ``fraction``, ``seed``, ``model`` (when set), ``received_at`` and ``status``.

        Raises:
            LedgerError: from :meth:`salt`, the salt is missing but tracked by DVC.
        """
        with self._lock():
            salt = self.salt(create=True)
            entry_id, body = self._body(request, salt)
            entries = self.entries()
            for e in entries:
                if e["id"] == entry_id:
                    if e["status"].startswith(("rejected: ", "failed: ")):  # asked again
                        e["history"] = [*e.get("history", []), e["status"]]
                        e["status"] = "pending"
                        self._write(entries)
                    return e
            entry = {
                "id": entry_id,
                **body,
                "received_at": received_at
                or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "status": "pending",
            }
            self._write([*self.entries(), entry])
            return entry

    def set_status(self, ids: list[str], status: str) -> None:
        """Set the status of some entries (under the ledger's file lock).

        Args:
            ids: the entry ids (``req-...``).
            status: ``pending``, ``applied in v1.2.0``, ``rejected: why`` or
                ``failed: step``.

        Raises:
            LedgerError: the status is none of those forms, or an id is not in the ledger.
        """
        if not (
            status == "pending" or status.startswith(("applied in ", "rejected: ", "failed: "))
        ):
            raise LedgerError(
                f"status must be pending, 'applied in V', 'rejected: R' or 'failed: S': {status}"
            )
        with self._lock():
            entries = self.entries()
            unknown = set(ids) - {e["id"] for e in entries}
            if unknown:
                raise LedgerError(f"{self.path}: unknown request id(s) {sorted(unknown)}")
            for e in entries:
                if e["id"] in ids:
                    e["status"] = status
            self._write(entries)

    # --- requests back from entries ------------------------------------------------------
    def request(
        self, entry: dict[str, Any], manifest: pd.DataFrame, complete: bool = True
    ) -> ForgetRequest:
        """Rebuild an entry as a request on ``manifest``.

        Its tokens are matched against the manifest's ids hashed with the salt (raw ids only
        in memory). A request is applied whole or not at all (``complete``); an applied
        request carried into a later revision (``complete=False``) keeps the ids still in
        the data, as long as one is.

        Args:
            entry: a ledger entry.
            manifest: the data manifest, with ``patient_id``/``image_id`` columns as the
                selector needs.
            complete: refuse when any token matches no id of the manifest.

        Returns:
            the request with raw ids (sorted) in place of tokens; reason, fraction and seed
            as recorded.

        Raises:
            RequestError: the manifest lacks an id column the selector uses; with
                ``complete``, a token matches no id; or no token of a key matches any id.
            LedgerError: from :meth:`salt`, the salt is missing.
        """
        salt = self.salt()
        selector = dict(entry["selector"])
        for key, column in ID_KEYS.items():
            if key in selector:
                if column not in manifest.columns:
                    raise RequestError(f"ledger {entry['id']}: the manifest has no '{column}'")
                wanted = set(selector[key])
                ids = manifest[column].astype(str).unique()
                selector[key] = sorted(v for v in ids if self.token(v, salt) in wanted)
                if complete and len(selector[key]) < len(wanted):
                    raise RequestError(
                        f"ledger {entry['id']}: {len(wanted) - len(selector[key])} of its "
                        f"{len(wanted)} {column}s are not in this manifest"
                    )
                if not selector[key]:
                    raise RequestError(
                        f"ledger {entry['id']}: none of its {len(wanted)} {column}s is in "
                        f"this manifest"
                    )
        return ForgetRequest(
            entry["reason"], selector, entry.get("fraction"), int(entry.get("seed", 0))
        )

    def carried(self, manifest: pd.DataFrame) -> list[tuple[str, ForgetRequest]]:
        """Rebuild every applied request of this model on ``manifest`` (ids still present).

        Args:
            manifest: the current data manifest.

        Returns:
            ``(ledger id, request)`` pairs in ledger order (``complete=False``: ids gone from
            the data are dropped).

        Raises:
            RequestError: from :meth:`request`, none of a request's ids is in the manifest.
        """
        return [(e["id"], self.request(e, manifest, complete=False)) for e in self.applied()]

    # --- io --------------------------------------------------------------------------------
    def _lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=600)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        write_text(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
        _ignore(Path(str(self.path) + ".lock"))


def _ignore(path: Path) -> None:
    """Keep ``path`` out of git (the salt; the lock file) via the folder's .gitignore."""
    ignore = path.parent / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    entry = f"/{path.name}"
    if entry not in lines:
        write_text(ignore, "\n".join([*lines, entry]) + "\n")


def track_salt(ledger: Ledger) -> str | None:
    """``dvc add`` the salt so it travels via the DVC remote.

    Args:
        ledger: the ledger whose ``salt_path`` is tracked (the DVC project is found from its
            folder).

    Returns:
        None when tracked, else why not (``not a DVC project``, or DVC's own error); never
        raises, so tracking the salt cannot lose the request.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo(str(ledger.salt_path.parent.resolve())) as repo:
            repo.add(str(ledger.salt_path.resolve()))
        return None
    except NotDvcRepoError:
        return "not a DVC project"
    except Exception as exc:  # noqa: BLE001 - tracking the salt must not lose the request
        return f"{type(exc).__name__}: {exc}"


def active_ledger(params: dict[str, Any], root: str | Path) -> Ledger | None:
    """The project's ledger when enabled.

    The flows use it only together with the registry (``applied in VERSION``).

    Args:
        params: the parsed ``params.yaml``: ``ledger.enabled``, ``ledger.path`` (relative to
            ``root``) and ``registry.model`` (the model it serves, default ``classifier``).
        root: the project root.

    Returns:
        the ledger, or None when ``ledger.enabled`` is false or absent.
    """
    section = dict(params.get("ledger") or {})
    if not section.get("enabled", False):
        return None
    return Ledger(
        Path(root) / section.get("path", "ledger/requests.jsonl"),
        model=str((params.get("registry") or {}).get("model", "classifier")),
    )


def split_carried(
    applied: list[tuple[str, ForgetRequest]], parent_record: dict[str, Any] | None
) -> tuple[list[tuple[str, ForgetRequest]], list[tuple[str, ForgetRequest]]]:
    """Sort the applied requests a revision keeps by whether its starting model forgot them.

    A registered parent forgot exactly the requests its record lists (``requests``: every
    request the version applies, its own ancestors' included); anything else, and every
    request when the revision starts from an unregistered model (``parent_record`` None:
    the ``maintain.deployed`` fallback), has not been forgotten by the weights in hand.

    Args:
        applied: ``(ledger id, request)`` pairs, as :meth:`Ledger.carried` gives them.
        parent_record: the registry record of the version the revision starts from, or
            None when it starts from a model the registry does not know.

    Returns:
        ``(inherited, again)``: the pairs the parent already forgot (kept out of every
        cohort, not unlearned again) and those it did not (forgotten again), each in
        ledger order.
    """
    forgot = {str(r.get("id")) for r in (parent_record or {}).get("requests") or []}
    inherited = [(i, r) for i, r in applied if i in forgot]
    again = [(i, r) for i, r in applied if i not in forgot]
    return inherited, again


def record_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """Keep what a revision record and card show of a ledger entry (tokens, never raw ids).

    Args:
        entry: a ledger entry.

    Returns:
        its ``id``, ``reason``, ``selector`` (tokens), ``fraction``, ``seed`` and
        ``received_at`` (None where absent); status and model left out.
    """
    keys = ("id", "reason", "selector", "fraction", "seed", "received_at")
    return {k: entry.get(k) for k in keys}


def use_project_salt(params: dict[str, Any], root: str | Path, create: bool = False) -> bool:
    """Salt every identifier token with the ledger's salt when the project has one.

    Sets the process-wide salt of ``hash_identifier`` and request hashes.

    Args:
        params: the parsed ``params.yaml`` (its ``ledger`` section).
        root: the project root (``ledger.path`` is relative to it).
        create: make the salt if the ledger is enabled and has none yet.

    Returns:
        whether tokens are salted from now on.

    Raises:
        LedgerError: from :meth:`Ledger.salt`, ``create`` with a salt that is tracked by DVC
            but missing.
    """
    section = dict(params.get("ledger") or {})
    if not section:
        return False
    ledger = Ledger(Path(root) / section.get("path", "ledger/requests.jsonl"))
    if not ledger.salt_path.is_file() and not (create and section.get("enabled", False)):
        return False
    set_identifier_salt(ledger.salt(create=create))
    return True
