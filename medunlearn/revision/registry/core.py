"""The registry's one interface, and the registry the flows write to.

:class:`Registry` (records, register, promote, rollback) over its parts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medunlearn.atomic import staging_dir
from medunlearn.revision.registry.base import (
    _SEMVER,
    RECORD,
    STAGES,
    RegistryBusy,
    RegistryError,
    artifact_hashes,
    semver,
)
from medunlearn.revision.registry.dvcfiles import DvcFiles, _dvc_file, _weights_sha256, in_dvc_stage
from medunlearn.revision.registry.git import _changed, _commit
from medunlearn.revision.registry.journal import Journal
from medunlearn.revision.registry.serving import Serving
from medunlearn.revision.registry.tags import TagLog


class Registry(TagLog, DvcFiles, Journal, Serving):
    """Revisions of named models in the git + DVC repository at ``root``.

    One interface over four parts, each in its own module: :class:`TagLog` (GTO tags),
    :class:`DvcFiles` (DVC), :class:`Journal` (lock, journal, repair) and :class:`Serving`
    (the serving folder); this class holds the records and the writes that use them all
    (register, promote, rollback).

    Args:
        root: the git + DVC repository (resolved to an absolute path).
        models_dir: revision folders (``<models_dir>/<name>/<version>/``), relative to
            ``root``.
        records_dir: records (``<records_dir>/<name>/<version>/revision.json``), relative to
            ``root``.
        serving_dir: production's serving folder, relative to ``root``.
        push: ``dvc push`` each registered revision to the default remote.
        lock_timeout: seconds a write waits for the registry lock before it fails
            (:class:`RegistryBusy`).
    """

    def __init__(
        self,
        root: str | Path = ".",
        models_dir: str = "models",
        records_dir: str = "registry",
        serving_dir: str = "models/production",
        push: bool = True,
        lock_timeout: float = 600.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.models_dir = models_dir
        self.records_dir = records_dir
        self.serving_dir = serving_dir
        self.push = push
        self.lock_timeout = lock_timeout

    @classmethod
    def from_params(cls, section: dict[str, Any], root: str | Path = ".") -> Registry:
        """Build a registry from the ``registry`` section of ``params.yaml``.

        Args:
            section: ``models_dir``, ``records_dir``, ``serving_dir``, ``push`` and
                ``lock_timeout`` (seconds), each optional (the constructor's defaults).
            root: the git + DVC repository.

        Returns:
            the registry (nothing is read or written yet).
        """
        return cls(
            root,
            models_dir=section.get("models_dir", "models"),
            records_dir=section.get("records_dir", "registry"),
            serving_dir=section.get("serving_dir", "models/production"),
            push=bool(section.get("push", True)),
            lock_timeout=float(section.get("lock_timeout", 600)),
        )

    # --- paths -------------------------------------------------------------------------
    def files_dir(self, name: str, version: str) -> Path:
        """Locate a revision's DVC-tracked folder.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            ``root/<models_dir>/<name>/<version>`` (whether or not it exists).
        """
        return self.root / self.models_dir / name / version

    def record_dir(self, name: str, version: str) -> Path:
        """Locate a revision's git-tracked record folder.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            ``root/<records_dir>/<name>/<version>`` (whether or not it exists).
        """
        return self.root / self.records_dir / name / version

    def is_repository(self) -> bool:
        """Tell whether ``root`` is a git + DVC repository.

        Returns:
            True when ``root`` holds ``.git`` and a ``.dvc`` folder.
        """
        return (self.root / ".git").exists() and (self.root / ".dvc").is_dir()

    # --- reading -----------------------------------------------------------------------
    def models(self) -> list[str]:
        """List the registered models.

        Returns:
            the names of the folders under ``records_dir``, sorted; empty when it is absent.
        """
        base = self.root / self.records_dir
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def versions(self, name: str) -> list[str]:
        """List the registered versions of a model.

        Args:
            name: the model name.

        Returns:
            every version with a record, oldest first (semantic order); empty for an unknown
            model.
        """
        base = self.root / self.records_dir / name
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if (p / RECORD).is_file() and _SEMVER.match(p.name)]
        return sorted(found, key=semver)

    def record(self, name: str, version: str) -> dict[str, Any]:
        """Read a revision's record (``revision.json``).

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            the record: parent, requests, data and params versions, gates, metrics, artifact
            hashes, commit and push state.

        Raises:
            RegistryError: ``unknown version``, no record for that model and version (the
                message lists the registered ones).
        """
        path = self.record_dir(name, version) / RECORD
        if not path.is_file():
            known = ", ".join(self.versions(name)) or "none"
            raise RegistryError(
                f"unknown version: model '{name}' has no version {version} (registered: {known})"
            )
        return json.loads(path.read_text())

    def register(
        self,
        name: str,
        source: Path,
        record: dict[str, Any],
        version: str,
        stages: tuple[str, ...] = ("candidate",),
        by: str = "medunlearn",
        card: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        before_commit: Callable[[str], list[Path]] | None = None,
        ledger_entry: tuple[Path, str] | None = None,
    ) -> dict[str, Any]:
        """Make the folder ``source`` (assembled by the caller) a new revision of ``name``.

        ``version`` is the one the caller planned with :meth:`next_version` (its report
        names it); if another run registered it meanwhile, this one fails by name rather
        than overwrite or renumber. ``record`` holds what the caller knows (parent, requests, data and params versions,
        gates, metrics); the version, artifact hashes, commit and push state are added
        here. ``card(record)`` gives the revision card's files (``{file name: text}``:
        card.md, card.json, report.html), written next to the record;
        ``before_commit(version)`` may change more files and return them for the
        same commit (``ledger_entry``, the forget ledger's file and request id it marks
        applied, is set pending again if a killed registration is undone). Returns the
        full record. On any failure every step taken is undone and ``source`` is removed;
        a kill is completed or undone by the next write (:meth:`repair`, the journal).

        Args:
            name: the model name.
            source: the revision folder, moved (not copied) into ``models_dir``; removed on
                failure or when the same revision exists.
            record: what the caller knows of the revision.
            version: the planned version, ``vX.Y.Z``.
            stages: stages assigned once registered.
            by: who registers (tag author).
            card: the revision card's files for the full record, or None for none.
            before_commit: more files for the registration commit, given the version.
            ledger_entry: ``(ledger file, request id)`` marked applied by ``before_commit``.

        Returns:
            the full record; when a registered version has the same weights, parent and
            requests, that version's record with ``existing: True`` (nothing registered).

        Raises:
            RegistryBusy: ``version taken`` by another run meanwhile, or the lock was held past
                ``lock_timeout`` seconds; nothing was registered.
            RegistryError: the revision or record folder already exists (a revision is never
                overwritten), or ``version`` is not ``vX.Y.Z``.
        """
        lock = self._locked()
        done: list[str] = []
        try:
            same = self._same_revision(name, source, record)
            if same is not None:  # same model bytes, parent and requests: same revision
                shutil.rmtree(source, ignore_errors=True)
                if before_commit is not None:  # e.g. the ledger: "applied in <same>"
                    changed = [p for p in before_commit(same) if _changed(self.root, p)]
                    if changed:
                        _commit(self.root, changed, f"{name} {same}: requests applied")
                return {**self.record(name, same), "existing": True}
            semver(version)
            if version in self.versions(name):
                raise RegistryBusy(
                    f"version taken: {name} {version} was registered by another run while "
                    f"this one ran; nothing was registered, run it again"
                )
            files = self.files_dir(name, version)
            rec_dir = self.record_dir(name, version)
            if files.exists() or rec_dir.exists():
                raise RegistryError(f"{files} already exists: a revision is never overwritten")
            journal = {
                "op": "register",
                "model": name,
                "version": version,
                "stages": list(stages),
                "by": by,
                "done": done,
                "ledger": None
                if ledger_entry is None
                else {
                    "path": Path(ledger_entry[0]).resolve().relative_to(self.root).as_posix(),
                    "id": ledger_entry[1],
                },
            }
            self._journal(journal)
            files.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, files)
            done.append("files")
            self._journal(journal)
            hashes = artifact_hashes(files)
            weights = _weights_sha256(files / "model.pt")
            dvc_file = _dvc_file(files)
            self._dvc_add(files)
            done.append("dvc")
            self._journal(journal)
            pushed, push_error = self._dvc_push(dvc_file) if self.push else (False, "push off")
            full = {
                **record,
                "model": name,
                "version": version,
                "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "artifacts": hashes,
                "weights_sha256": weights,
                "files": files.relative_to(self.root).as_posix(),
                "dvc_file": dvc_file.relative_to(self.root).as_posix(),
                "pushed": pushed,
                "push_command": None if pushed else f"dvc push {dvc_file.relative_to(self.root)}",
                "push_error": push_error,
            }
            tmp_rec = staging_dir(rec_dir.parent, ".record-")
            (tmp_rec / RECORD).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
            if card is not None:  # card.md, card.json, report.html
                for file_name, text in card(full).items():
                    (tmp_rec / file_name).write_text(text)
            rec_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp_rec), rec_dir)
            done.append("record")
            self._journal(journal)
            paths = [rec_dir, dvc_file, files.parent / ".gitignore"]
            if before_commit is not None:  # e.g. the forget ledger: "applied in <version>"
                paths += before_commit(version)
            _commit(self.root, paths, f"{name} {version}: register revision")
            done.append("commit")
            self._journal(journal)
            self._tag_register(name, version, by)
            done.append("tag")
            self._journal(journal)
            for stage in stages:
                self._assign(name, version, stage, by, "registered by the pipeline")
            self._end_journal()
            return full
        except BaseException:
            self._undo(name, version, done, source)
            self._end_journal()
            raise
        finally:
            lock.release()

    def commit_files(self, paths: list[Path], message: str) -> None:
        """Commit exactly ``paths`` under the registry lock.

        For the forget ledger after a request was rejected, which no revision commit will
        carry.

        Args:
            paths: files to commit (absolute, under ``root``); absent ones are skipped.
            message: the commit message.

        Raises:
            RegistryBusy: the lock was held past ``lock_timeout`` seconds.
        """
        lock = self._locked()
        try:
            _commit(self.root, paths, message)
        finally:
            lock.release()

    def promote(
        self,
        name: str,
        version: str,
        to: str,
        by: str,
        why: str,
        allow_regression: str | None = None,
        accept: str | None = None,
    ) -> dict[str, Any]:
        """Assign ``version`` to stage ``to`` after the promotion rules.

        Each refusal is a :class:`RegistryError` naming its rule. Production also materialises
        the files at ``serving_dir``.

        A revision whose pass has caveats (``record["caveats"]``, from
        ``medunlearn.revision.candidates.evidence_caveats``: not discriminating, underpowered)
        goes to production only with ``accept`` (the reason, recorded with the promotion).

        Args:
            name: the model name.
            version: the version to promote, ``vX.Y.Z``.
            to: ``staging`` or ``production``.
            by: who promotes (tag author); must not be blank.
            why: the reason (tag message); must not be blank.
            allow_regression: the reason to serve a version that predates applied requests
                (recorded in the tag), or None.
            accept: the reason to serve a pass with caveats (recorded in the tag), or None.

        Returns:
            ``model``, ``version``, ``stage`` and, when assigned, ``by`` and ``why`` (the tag
            note); ``unchanged: True`` instead when the version already holds the stage.

        Raises:
            RegistryError: a stage other than staging/production; no ``by`` or ``why``;
                ``gates failed``; ``no prior staging`` (production); ``weak evidence`` without
                ``accept``; ``forget regression`` without ``allow_regression``; an unknown
                version or files that differ from the record.
        """
        if to not in STAGES[1:]:
            raise RegistryError(f"stage must be staging or production, not '{to}'")
        if not by.strip() or not why.strip():
            raise RegistryError("a promotion names who (--by) and why (--why)")
        lock = self._locked()
        try:
            record = self.record(name, version)
            if not (record.get("gates") or {}).get("passed", False):
                raise RegistryError(f"gates failed: {name} {version} did not pass its gates")
            if to == "production":
                staged = [e for e in self.events(name) if e.stage == "staging" and not e.removed]
                if not any(e.version == version for e in staged):
                    raise RegistryError(
                        f"no prior staging: {name} {version} was never in staging; "
                        f"promote it --to staging first"
                    )
                caveats = list(record.get("caveats") or [])
                if caveats and not (accept or "").strip():
                    raise RegistryError(
                        f"weak evidence: {name} {version}'s gate pass cannot show everything "
                        f"({'; '.join(caveats)}); pass --accept REASON to promote anyway"
                    )
                regressions = self.regressions(name, version)
                if regressions and not (allow_regression or "").strip():
                    raise RegistryError(
                        f"forget regression: {name} {version} predates applied request(s) "
                        f"{', '.join(regressions)}; pass --allow-regression REASON to override"
                    )
            self._require_intact(name, version)
            allowed = (allow_regression or "").strip()
            note = f"{why} (regression allowed: {allowed})" if allowed else why
            if (accept or "").strip():  # recorded whenever given, never silently dropped
                accepted = "caveats accepted" if record.get("caveats") else "accepted, no caveats"
                note = f"{note} ({accepted}: {accept.strip()})"
            if self.current(name, to) == version:
                if to == "production" and (self.served() or {}).get("version") != version:
                    self.materialise(name, version)  # an earlier copy was interrupted
                return {"model": name, "version": version, "stage": to, "unchanged": True}
            if to == "production":
                self._serve_then_tag(
                    name, version, lambda: self._assign(name, version, to, by, note)
                )
            else:
                self._assign(name, version, to, by, note)
            return {"model": name, "version": version, "stage": to, "by": by, "why": note}
        finally:
            lock.release()

    def rollback(
        self,
        name: str,
        stage: str,
        to: str | None,
        by: str,
        why: str,
        allow_regression: str | None = None,
    ) -> dict[str, Any]:
        """Assign an earlier version to ``stage`` again.

        The previous version of ``stage`` (the one before the current, in the assignment
        history), or ``to``; production files are materialised. The newer revision is never
        deleted.

        Production obeys :meth:`promote`'s forget-regression rule: a version that predates a
        request which served in production (it would serve a model trained on rows that
        were withdrawn) needs ``allow_regression`` (the reason, recorded in the tag).

        Args:
            name: the model name.
            stage: the stage to roll back (candidate, staging or production).
            to: the version to assign again (it must have been in ``stage``), or None for the
                latest other version the stage held.
            by: who rolls back (tag author); must not be blank.
            why: the reason (tag message); must not be blank.
            allow_regression: the reason to serve a version that predates applied requests,
                or None.

        Returns:
            ``model``, ``stage``, ``from`` (the version replaced, or None), ``to``,
            ``served`` (hashes of the production files, None for other stages),
            ``regression`` (request ids allowed past the rule) and ``lacks`` (request ids
            served in production that ``to`` predates).

        Raises:
                RegistryError: unknown stage, model or version; ``never in <stage>``; nothing to
                roll back to; ``to`` already in the stage; no ``by`` or ``why``; a forget
                regression without ``allow_regression``; files that differ from the record.
        """
        if stage not in STAGES:
            raise RegistryError(f"unknown stage '{stage}' (one of {', '.join(STAGES)})")
        if not by.strip() or not why.strip():
            raise RegistryError("a rollback names who (--by) and why (--why)")
        lock = self._locked()
        try:
            if name not in self.models():
                raise RegistryError(f"unknown model '{name}' (registered: {self.models()})")
            current = self.current(name, stage)
            history = [
                e.version
                for e in self.events(name)
                if e.stage == stage and e.version and not e.removed
            ]
            if to is not None and to not in history:
                self.record(name, to)  # unknown version refused first
                raise RegistryError(
                    f"never in {stage}: {name} {to} was never assigned to {stage}, so there "
                    f"is nothing to roll back to; promote it (its rules apply)"
                )
            if to is None:
                earlier = [v for v in reversed(history) if v != current]
                if not earlier:
                    raise RegistryError(
                        f"nothing to roll back to: {name} has had no other version in {stage}"
                    )
                to = earlier[0]
            self.record(name, to)  # unknown version refused
            if to == current:
                raise RegistryError(f"{name} {to} is already in {stage}")
            regressions = self.regressions(name, to) if stage == "production" else []
            if regressions and not (allow_regression or "").strip():
                raise RegistryError(
                    f"forget regression: {name} {to} predates applied request(s) "
                    f"{', '.join(regressions)}; pass --allow-regression REASON to override"
                )
            self._require_intact(name, to)
            target = to
            note = why
            if regressions:
                note = f"{why} (regression allowed: {allow_regression.strip()}; lacks "
                note += f"{', '.join(regressions)})"

            def tag() -> None:
                if current:
                    self._unassign(name, current, stage, by, f"rolled back to {target}: {note}")
                self._assign(name, target, stage, by, f"rollback from {current}: {note}")

            served = None
            if stage == "production":
                served = self._serve_then_tag(name, to, tag)
            else:
                tag()
            return {
                "model": name,
                "stage": stage,
                "from": current,
                "to": to,
                "served": served,
                "regression": regressions,  # allowed past production's rule (in the tag)
                "lacks": self.regressions(name, to),  # requests served that it predates
            }
        finally:
            lock.release()

    def regressions(self, name: str, version: str) -> list[str]:
        """List the requests that serving ``version`` would undo.

        Those a revision which has served in production carried and ``version`` does not
        (it predates them). A request only in a candidate or staging revision is not yet in
        force.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            the request ids, sorted; empty when ``version`` carries them all.

        Raises:
            RegistryError: from :meth:`record`, an unknown version.
        """
        mine = {r["id"] for r in self.record(name, version).get("requests", [])}
        served = {
            e.version
            for e in self.events(name)
            if e.stage == "production" and e.version and not e.removed
        }
        applied: set[str] = set()
        for v in served & set(self.versions(name)):
            applied |= {r["id"] for r in self.record(name, v).get("requests", [])}
        return sorted(applied - mine)


def active_registry(params: dict[str, Any], root: str | Path = ".") -> tuple[Registry | None, str]:
    """The registry the flows write to, or ``None`` with the reason it is off.

    Off when ``registry.enabled`` is false or absent, inside a DVC stage (``dvc repro`` and
    ``dvc exp run`` own the commits there; the stage writes ``maintain.candidate_dir``), or
    when ``root`` is not a git + DVC repository.

    Args:
        params: the parsed ``params.yaml``: its ``registry`` section, with the ``promotion``
            section's keys (e.g. ``serving_dir``) laid over it.
        root: the repository.

    Returns:
        ``(registry, "")``, or ``(None, reason)`` when the registry is off.
    """
    section = dict(params.get("registry") or {})
    if not section.get("enabled", False):
        return None, "registry.enabled is false"
    if in_dvc_stage():
        return None, f"inside DVC stage '{os.environ.get('DVC_STAGE')}': stages never commit"
    registry = Registry.from_params({**section, **dict(params.get("promotion") or {})}, root)
    if not registry.is_repository():
        return None, f"{registry.root} is not a git + DVC repository (git init; dvc init)"
    return registry, ""
