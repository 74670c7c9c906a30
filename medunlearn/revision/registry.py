"""The model registry: revisions of a named model, their stages, promotion and rollback.

Built on DVC and git, as the design card asks:

- **Files** of a revision live under ``models/<name>/<version>/`` (checkpoint, ONNX file,
  reports, card), a path that names the version, so two revisions never overwrite each
  other. The folder is DVC-tracked (``models/<name>/<version>.dvc``) and pushed to the
  default DVC remote.
- **The record** (``registry/<name>/<version>/revision.json``, plus the revision card) is a
  small JSON file committed to git with the ``.dvc`` file, in one commit that touches only
  those paths (the user's other changes are left alone).
- **Versions and stages** are GTO tags on that commit (``gto register``: ``name@v1.1.0``;
  ``gto assign``: ``name#staging#N``), so ``gto show`` reads the same registry.

Why the current stage is read from the tags here instead of from ``gto.api.show``: GTO
orders events by the tag's timestamp, which git stores in whole seconds, and picks a
stage's version by the highest semantic version. A rollback assigns an *older* version
again, often within the same second as the assignment it undoes, and GTO then still reports
the newer one. GTO numbers every assignment tag of an artifact (``#N``, strictly
increasing), so the stage's version here is the one of the highest-numbered assignment
(an unassignment, ``name#stage!#N``, empties the stage). A rollback also unassigns the
version it replaces, so ``gto show`` agrees whenever the timestamps differ.

Every write keeps a journal (``.medunlearn-registry.journal.json``) of the steps it has
taken; a process killed mid-write leaves it, and the next write, ``revise`` or
``medunlearn registry --repair`` first completes the write (a registration already
committed gets its tag and stages) or undoes it (files, DVC file and record removed, its
ledger request pending again; production files put back to what the stage tags say).
Every write holds a file lock (``.medunlearn-registry.lock`` at the repository root): two
maintenance runs on one repository never interleave their registry writes; the second waits
up to ``lock_timeout`` seconds, then fails naming the lock. A registration either completes
(files, record, commit and tags) or is undone step by step; a DVC remote that cannot be
reached leaves the revision local and marked ``unpushed`` with the command that pushes it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from medunlearn.atomic import orphans, remove_orphans, staging_dir, write_text
from medunlearn.errors import Refusal
from medunlearn.models.checkpoint import CheckpointError, weights_sha256
from medunlearn.revision.ledger import Ledger
from medunlearn.versioning import file_sha256

STAGES = ("candidate", "staging", "production")
RECORD = "revision.json"
LOCK = ".medunlearn-registry.lock"
# What a registry write has done so far (register: files, dvc, record, commit, tag, stages;
# promote/rollback: serve), rewritten atomically after each step and removed at the end. A
# process killed mid-write leaves it behind; the next registry write (or
# ``medunlearn registry --repair``) reads it first and completes or undoes that write.
JOURNAL = ".medunlearn-registry.journal.json"
_SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_ASSIGN = re.compile(r"^(?P<name>[^#@]+)#(?P<stage>[^#!]+)(?P<un>!?)#(?P<n>\d+)$")


_GTO_IMPORT = threading.Lock()


SERVED_FILE = "model.onnx"  # what a serving folder must always hold


def gto_api() -> Any:
    """``gto.api``, imported without GTO's logging set-up.

    ``gto/log.py`` calls ``logging.config.dictConfig`` at import time, which flushes and
    closes every logging handler in the process. Imported inside a Prefect flow run, that
    flush waits for Prefect's API log worker while Prefect's event-loop thread waits for the
    logging lock the flush holds: a deadlock (a `medunlearn train` hung for minutes at
    ``register_revision``, 2026-12-01). So GTO's module is imported once with ``dictConfig``
    made a no-op; its ``gto`` logger then propagates to the process's handlers.
    """
    with _GTO_IMPORT:
        if "gto.log" not in sys.modules:
            configure = logging.config.dictConfig
            logging.config.dictConfig = lambda config: None
            try:
                import gto.log  # noqa: F401
            finally:
                logging.config.dictConfig = configure
    from gto import api

    return api


class RegistryError(Refusal, RuntimeError):
    """A registry rule refused the operation; the message names the rule (CLI exit 1)."""


class RegistryBusy(RegistryError):
    """Another run holds the registry lock, or registered the version this run planned:
    nothing was written; running again succeeds (a request stays pending)."""


@dataclass(frozen=True)
class StageEvent:
    """One GTO assignment (or unassignment) tag, in the artifact's tag order ``number``."""

    number: int
    stage: str
    version: str | None  # the version assigned, or (``removed``) the one taken out
    by: str
    at: str  # ISO 8601 (the tag's date)
    why: str
    tag: str
    removed: bool = False  # an unassignment: the stage no longer holds ``version``


def semver(version: str) -> tuple[int, int, int]:
    """``v1.2.0`` -> (1, 2, 0); raises :class:`RegistryError` for anything else."""
    match = _SEMVER.match(version or "")
    if not match:
        raise RegistryError(f"'{version}' is not a version of the form v<major>.<minor>.<patch>")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def artifact_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in a revision folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def in_dvc_stage() -> bool:
    """True inside a ``dvc repro``/``dvc exp run`` stage: DVC writes ``dvc.lock`` (and
    experiments their own commits) after the stage, so a stage never commits or tags."""
    return bool(os.environ.get("DVC_STAGE"))


class Registry:
    """Revisions of named models in the git + DVC repository at ``root``."""

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
        """From the ``registry`` section of ``params.yaml``."""
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
        return self.root / self.models_dir / name / version

    def record_dir(self, name: str, version: str) -> Path:
        return self.root / self.records_dir / name / version

    def is_repository(self) -> bool:
        return (self.root / ".git").exists() and (self.root / ".dvc").is_dir()

    # --- reading -----------------------------------------------------------------------
    def models(self) -> list[str]:
        base = self.root / self.records_dir
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, oldest first (semantic order)."""
        base = self.root / self.records_dir / name
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if (p / RECORD).is_file() and _SEMVER.match(p.name)]
        return sorted(found, key=semver)

    def record(self, name: str, version: str) -> dict[str, Any]:
        """The revision record; :class:`RegistryError` for an unknown model or version."""
        path = self.record_dir(name, version) / RECORD
        if not path.is_file():
            known = ", ".join(self.versions(name)) or "none"
            raise RegistryError(
                f"unknown version: model '{name}' has no version {version} (registered: {known})"
            )
        return json.loads(path.read_text())

    def events(self, name: str) -> list[StageEvent]:
        """Every stage assignment of ``name``, in GTO's tag order."""
        out = _git(
            self.root,
            "for-each-ref",
            "--format=%(refname:short)%09%(taggername)%09%(taggerdate:iso-strict)%09"
            "%(contents:subject)",
            f"refs/tags/{name}#*",
        )
        events = []
        for tag, by, at, message in _tag_entries(out):
            m = _ASSIGN.match(tag)
            if not m or m["name"] != name:
                continue
            events.append(
                StageEvent(
                    int(m["n"]),
                    m["stage"],
                    _version_of(message),
                    by,
                    at,
                    _why(message),
                    tag,
                    removed=bool(m["un"]),
                )
            )
        return sorted(events, key=lambda e: e.number)

    def history(self, name: str, version: str) -> list[dict[str, Any]]:
        """Every stage event of ``version`` (assignments, and unassignments naming it), in
        order: the promotion history a revision card shows."""
        return [
            {
                "stage": f"left {e.stage}" if e.removed else e.stage,
                "by": e.by,
                "at": e.at,
                "why": e.why,
                "tag": e.tag,
            }
            for e in self.events(name)
            if e.version == version
        ]

    def stages(self, name: str) -> dict[str, str | None]:
        """The version currently in each stage (the latest assignment), or None."""
        current: dict[str, str | None] = {s: None for s in STAGES}
        for event in self.events(name):
            current[event.stage] = None if event.removed else event.version
        return current

    def current(self, name: str, stage: str) -> str | None:
        return self.stages(name).get(stage)

    def next_version(self, name: str, bump: str, parent: str | None = None) -> str:
        """``major``: the next major line (v1.0.0 first); ``minor``: the parent's major with
        the next free minor (v1.1.0 after v1.0.0, v1.2.0 after v1.1.0)."""
        versions = [semver(v) for v in self.versions(name)]
        if bump == "major" or not versions:
            major = max((v[0] for v in versions), default=0) + 1
            return f"v{major}.0.0"
        base = semver(parent)[0] if parent else max(versions)[0]
        minor = max((v[1] for v in versions if v[0] == base), default=0) + 1
        return f"v{base}.{minor}.0"

    def production_checkpoint(self, name: str, version: str) -> Path:
        """The verified checkpoint of a revision (fetched from DVC when absent)."""
        self._require_intact(name, version)
        return self.files_dir(name, version) / "model.pt"

    def _require_intact(self, name: str, version: str) -> None:
        """Refuse (:class:`RegistryError`) a revision whose files differ from its record."""
        bad = self.verify(name, version)
        if bad:
            raise RegistryError(
                f"artifacts do not match the record: {name} {version}: {', '.join(bad)}; "
                f"restore them with `dvc checkout --force "
                f"{_dvc_file(self.files_dir(name, version)).relative_to(self.root)}`"
            )

    def verify(self, name: str, version: str) -> list[str]:
        """Files of a revision that do not match their recorded sha256 (missing included),
        after fetching them from the DVC cache or remote when absent."""
        record = self.record(name, version)
        folder = self.files_dir(name, version)
        if not all((folder / f).is_file() for f in record["artifacts"]):
            self.fetch(name, version)
        bad = []
        for rel, digest in record["artifacts"].items():
            path = folder / rel
            if not path.is_file():
                bad.append(f"{rel} (missing)")
            elif file_sha256(path) != digest:
                bad.append(f"{rel} (sha256 differs from the record)")
        return bad

    def fetch(self, name: str, version: str) -> None:
        """Bring a revision's files into the working tree from the DVC cache or remote."""
        from dvc.repo import Repo

        dvc_file = str(_dvc_file(self.files_dir(name, version)))
        with _quiet(), Repo(str(self.root)) as repo:
            try:
                repo.checkout(targets=[dvc_file], force=True)
            except Exception:  # noqa: BLE001 - not in the cache: ask the remote
                repo.pull(targets=[dvc_file], force=True)

    # --- writing -----------------------------------------------------------------------
    def lock(self) -> FileLock:
        return FileLock(str(self.root / LOCK), timeout=self.lock_timeout)

    def _acquire(self) -> FileLock:
        """The registry lock, held; :class:`RegistryError` naming it after the timeout."""
        lock = self.lock()
        try:
            lock.acquire()
        except Timeout as exc:
            raise RegistryBusy(
                f"registry busy: another run holds {self.root / LOCK} "
                f"(waited {self.lock_timeout:.0f} s); retry when it has finished"
            ) from exc
        return lock

    def _locked(self):
        """Hold the registry lock, after finishing any write a killed process left half
        done (:meth:`repair`)."""
        lock = self._acquire()
        try:
            self._recover()
        except BaseException:
            lock.release()
            raise
        return lock

    # --- the journal of a write in progress ------------------------------------------------
    def _journal(self, state: dict[str, Any]) -> None:

        write_text(self.root / JOURNAL, json.dumps(state, indent=2) + "\n")

    def _end_journal(self) -> None:
        (self.root / JOURNAL).unlink(missing_ok=True)

    def interrupted(self) -> bool:
        """A killed write left its journal: :meth:`repair` before reading the registry."""
        return (self.root / JOURNAL).is_file()

    def repair(self) -> str | None:
        """Bring the registry to a consistent state after a killed write (what every write
        does first anyway); returns what was done, or None when nothing was pending."""
        lock = self._acquire()
        try:
            did = [d for d in (self._recover(quiet=True), self._remove_orphans()) if d]
            return "; ".join(did) or None
        finally:
            lock.release()

    def orphans(self) -> bool:
        """Whether a killed run left a staging folder behind (:meth:`repair` removes it)."""
        return any(orphans(folder, prefixes) for folder, prefixes in self._staging_parents())

    def _staging_parents(self) -> list[tuple[Path, tuple[str, ...]]]:
        """(folder, name prefixes) of every place a run stages files before a rename."""
        serving = (self.root / self.serving_dir).parent
        places = [
            (self.root / self.models_dir, (".revision-",)),
            (serving, (".serving-old-", ".serving-")),
        ]
        records = self.root / self.records_dir
        if records.is_dir():
            places += [(m, (".record-",)) for m in records.iterdir() if m.is_dir()]
        return places

    def _remove_orphans(self) -> str | None:
        """Remove the staging folders of runs that are no longer running (a kill during an
        export, a record or a serving swap leaves one); a live run's are left alone."""
        removed = []
        for folder, prefixes in self._staging_parents():
            removed += [
                (folder / n).relative_to(self.root).as_posix()
                for n in remove_orphans(folder, prefixes)
            ]
        return (
            f"removed staging folder(s) of killed runs: {', '.join(removed)}" if removed else None
        )

    def _recover(self, quiet: bool = False) -> str | None:
        """Complete or undo the write recorded in the journal (the lock is held).

        A registration whose commit exists is completed (register tag, then each planned
        stage not yet assigned): the revision and its ledger update are in git already. One
        without a commit is undone: its files, DVC file, .gitignore entry and record are
        removed and its ledger request is pending again. An interrupted promotion or
        rollback has its production files put back to what the stage tags say."""
        path = self.root / JOURNAL
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except ValueError:  # torn by a kill mid-write: atomic writes make this unreachable
            state = {}
        stale = self.root / ".git" / "index.lock"  # a git commit killed mid-way
        if stale.exists():
            import time

            if time.time() - stale.stat().st_mtime < 60:  # maybe a live git process
                raise RegistryError(
                    f"{stale} is recent: another git process may be running; repair again "
                    "in a minute (`medunlearn registry --repair`)"
                )
            stale.unlink()
        op, name, version = state.get("op"), state.get("model"), state.get("version")
        if op == "register" and name and version:
            did = self._recover_register(state)
        elif op == "serve" and name:
            current = self.current(name, "production")
            previous = state.get("previous")
            if current is None and previous:
                # killed between a rollback's unassign and assign: production is served
                # again by the version it had before the write (never left empty)
                self._assign(
                    name,
                    previous,
                    "production",
                    state.get("by", "medunlearn"),
                    "restored: an interrupted promotion or rollback left production empty",
                )
                current = previous
            if (self.served() or {}).get("version") != current:
                if current:
                    self.materialise(name, current)
                else:  # the first promotion was cut: nothing ever served
                    shutil.rmtree(self.root / self.serving_dir, ignore_errors=True)
            did = f"production files of {name} match its stage tags ({current})"
        else:
            did = "an unreadable journal was discarded"
        serving_parent = (self.root / self.serving_dir).parent
        for leftover in serving_parent.glob(".serving-*"):  # a swap killed mid-way
            shutil.rmtree(leftover, ignore_errors=True)
        self._end_journal()
        if not quiet:  # repair()'s caller reports it itself (said once)
            logging.getLogger(__name__).warning("registry repaired: %s", did)
        return did

    def _recover_register(self, state: dict[str, Any]) -> str:
        name, version = state["model"], state["version"]
        record = self.record_dir(name, version) / RECORD
        rel = record.relative_to(self.root).as_posix()
        has_head = (
            subprocess.run(
                ["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=self.root, capture_output=True
            ).returncode
            == 0
        )
        # _git raises when git itself fails: never read a git failure as "not committed"
        # (undoing would delete a registered version's files)
        committed = has_head and bool(_git(self.root, "ls-tree", "--name-only", "HEAD", "--", rel))
        by = state.get("by", "medunlearn")
        if committed:
            if f"{name}@{version}" not in _git(self.root, "tag", "-l", f"{name}@{version}"):
                commit = _git(self.root, "log", "-1", "--format=%H", "--", rel).strip()
                self._tag_register(name, version, by, commit or "HEAD")
            assigned = {
                e.stage for e in self.events(name) if e.version == version and not e.removed
            }
            for stage in state.get("stages", []):
                if stage not in assigned:
                    self._assign(name, version, stage, by, "registered by the pipeline")
            return f"completed the registration of {name} {version} (tag, stages)"
        files = self.files_dir(name, version)
        staged = [self.record_dir(name, version), _dvc_file(files), files.parent / ".gitignore"]
        subprocess.run(  # a kill inside the commit, after `git add`: unstage its paths
            ["git", "reset", "-q", "--", *(str(p.relative_to(self.root)) for p in staged)],
            cwd=self.root,
            capture_output=True,
        )
        self._undo(name, version, ["record", "dvc", "files"], self.root / ".no-source")
        ledger = state.get("ledger")
        if ledger:
            book = Ledger(self.root / ledger["path"])
            entry = next((e for e in book.entries() if e["id"] == ledger["id"]), None)
            if entry is not None and entry["status"] == f"applied in {version}":
                book.set_status([ledger["id"]], "pending")
        return f"undid the interrupted registration of {name} {version} (it had no commit)"

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
        a kill is completed or undone by the next write (:meth:`recover`, the journal).
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
        """Commit exactly ``paths`` under the registry lock: the forget ledger after a
        request was rejected, which no revision commit will carry."""
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
        """Assign ``version`` to stage ``to`` after the promotion rules (each refusal a
        :class:`RegistryError` naming its rule). Production also materialises the files at
        ``serving_dir``.

        A revision whose pass has caveats (``record["caveats"]``, from
        ``medunlearn.revision.candidates.evidence_caveats``: not discriminating, underpowered) goes to
        production only with ``accept`` (the reason, recorded with the promotion)."""
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
        """Assign the previous version of ``stage`` (the one before the current, in the
        assignment history) or ``to`` to it again; production files are materialised. The
        newer revision is never deleted.

        Production obeys :meth:`promote`'s forget-regression rule: a version that predates a
        request which served in production (it would serve a model trained on rows that
        were withdrawn) needs ``allow_regression`` (the reason, recorded in the tag).

        Raises:
            RegistryError: unknown stage or version, nothing to roll back to, no ``by`` or
                ``why``, or a forget regression without ``allow_regression``.
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

    def materialise(self, name: str, version: str) -> dict[str, str]:
        """Copy a revision's model files to ``serving_dir`` (swapped in as one folder) and
        return their sha256, which equal the record's."""
        record = self._require_servable(name, version)
        folder = self.files_dir(name, version)
        serving = self.root / self.serving_dir
        staging = staging_dir(serving.parent, ".serving-")
        try:
            for rel in record["artifacts"]:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / rel, target)
            (staging / "SERVING.json").write_text(
                json.dumps({"model": name, "version": version}, indent=2) + "\n"
            )
            hashes = {rel: file_sha256(staging / rel) for rel in record["artifacts"]}
            if hashes != record["artifacts"]:
                raise RegistryError(
                    f"materialised files of {name} {version} differ from the record"
                )
            aside = staging_dir(serving.parent, ".serving-old-")
            if serving.exists():
                os.replace(serving, aside / "previous")
            os.replace(staging, serving)
            shutil.rmtree(aside, ignore_errors=True)
            return hashes
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _require_servable(self, name: str, version: str) -> dict[str, Any]:
        """The version's record, refusing a version without an ONNX file (a rollback or
        promotion must never leave the serving folder without one)."""
        record = self.record(name, version)
        served = self.served() or {}
        if served.get("model") not in (None, name):
            raise RegistryError(
                f"{self.serving_dir} serves {served['model']} {served.get('version')}: one "
                f"serving folder per model; set promotion.serving_dir for {name} (e.g. "
                f"models/{name}/production)"
            )
        if SERVED_FILE not in record["artifacts"]:
            raise RegistryError(
                f"{name} {version} has no {SERVED_FILE} (registered before every version was "
                f"exported); serving it would leave {self.serving_dir} without one: register "
                "the model again (medunlearn train) and serve that version"
            )
        return record

    def served(self) -> dict[str, Any] | None:
        """What ``serving_dir`` holds (``SERVING.json``), or None."""
        path = self.root / self.serving_dir / "SERVING.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _serve_then_tag(self, name: str, version: str, tag: Callable[[], None]) -> dict:
        """Swap the production files in, then write the stage tag(s); if tagging fails the
        previous production files are put back, so registry and serving never disagree."""
        self._require_servable(name, version)  # before anything is journalled or moved
        before = self.served()
        previous = (before or {}).get("version") if (before or {}).get("model") == name else None
        self._journal({"op": "serve", "model": name, "version": version, "previous": previous})
        hashes = self.materialise(name, version)
        try:
            tag()
        except BaseException:
            if before and before.get("model") == name and before.get("version"):
                self.materialise(name, before["version"])
            else:
                shutil.rmtree(self.root / self.serving_dir, ignore_errors=True)
            self._end_journal()
            raise
        self._end_journal()
        return hashes

    def regressions(self, name: str, version: str) -> list[str]:
        """Ids of requests that a revision which has served in production carried and
        ``version`` does not (it predates them): serving it would undo their forgetting. A
        request only in a candidate or staging revision is not yet in force."""
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

    # --- helpers -----------------------------------------------------------------------
    def _same_revision(self, name: str, source: Path, record: dict[str, Any]) -> str | None:
        """A registered version with the same weights (or, for a file that is not a
        checkpoint, the same bytes), parent and request ids."""
        model = Path(source) / "model.pt"
        if not model.is_file():
            return None
        digest, weights = file_sha256(model), _weights_sha256(model)
        ids = sorted(r["id"] for r in record.get("requests", []))
        for v in self.versions(name):
            other = self.record(name, v)
            same = (
                other.get("weights_sha256") == weights
                if weights and other.get("weights_sha256")
                else other["artifacts"].get("model.pt") == digest
            )
            if (
                same
                and other.get("parent") == record.get("parent")
                and sorted(r["id"] for r in other.get("requests", [])) == ids
            ):
                return v
        return None

    def _dvc_add(self, folder: Path) -> None:
        from dvc.repo import Repo

        with _quiet(), Repo(str(self.root)) as repo:
            repo.add(str(folder))

    def _dvc_push(self, dvc_file: Path) -> tuple[bool, str | None]:
        from dvc.repo import Repo

        try:
            with _quiet(), Repo(str(self.root)) as repo:
                repo.push(targets=[str(dvc_file)])
            return True, None
        except Exception as exc:  # noqa: BLE001 - any remote failure leaves it local
            return False, f"{type(exc).__name__}: {exc}"[:300]

    def _tag_register(self, name: str, version: str, by: str, ref: str = "HEAD") -> None:
        api = gto_api()

        api.register(
            str(self.root),
            name,
            ref,
            version=version,
            message="registered by medunlearn",
            author=by,
            author_email=f"{by}@medunlearn",
        )

    def _assign(self, name: str, version: str, stage: str, by: str, why: str) -> None:
        api = gto_api()

        api.assign(
            str(self.root),
            name,
            stage,
            version=version,
            message=f"{version}: {why}",
            author=by,
            author_email=_email(by),
            # always: GTO may still count an older version in the stage after a newer one
            # took it (its "in stage" is not our "latest assignment"), and would refuse
            # to assign it back ("already in stage"); the latest tag is what counts here
            force=True,
        )

    def _unassign(self, name: str, version: str, stage: str, by: str, why: str) -> None:
        api = gto_api()

        api.unassign(
            str(self.root),
            name,
            stage=stage,
            version=version,
            message=f"{version}: {why}",
            author=by,
            author_email=_email(by),
        )

    def _undo(self, name: str, version: str, done: list[str], source: Path) -> None:
        """Reverse the steps a failed registration took (``done``), newest first; what an
        earlier revision wrote is never touched."""
        if "tag" in done or "commit" in done:
            for tag in _git(self.root, "tag", "-l", f"{name}@{version}", f"{name}#*").split():
                if tag == f"{name}@{version}" or _tag_version(self.root, tag) == version:
                    _git(self.root, "tag", "-d", tag)
        files = self.files_dir(name, version)
        if "commit" in done:
            _git(self.root, "reset", "-q", "--soft", "HEAD~1")
            _git(
                self.root,
                "reset",
                "-q",
                "HEAD",
                "--",
                str(self.record_dir(name, version)),
                str(_dvc_file(files)),
                str(files.parent / ".gitignore"),
            )
        if "record" in done:
            shutil.rmtree(self.record_dir(name, version), ignore_errors=True)
        if "dvc" in done:
            _dvc_file(files).unlink(missing_ok=True)
            _drop_gitignore_entry(files)
        if "files" in done:
            shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)


def _weights_sha256(path: Path) -> str | None:
    """The checkpoint's weights hash (``checkpoint.weights_sha256``), None for other files."""

    if not path.is_file():
        return None
    try:
        return weights_sha256(path)
    except CheckpointError:
        return None


def _dvc_file(folder: Path) -> Path:
    """``models/c/v1.0.0`` -> ``models/c/v1.0.0.dvc`` (``with_suffix`` would cut at ``.0``)."""
    return folder.parent / f"{folder.name}.dvc"


def _quiet():
    """DVC prints git hints ("To track the changes with git, run: ...") on stdout; the
    registry commits those files itself."""
    import contextlib
    import io
    import logging

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    scm_logger = logging.getLogger("dvc.repo.scm_context")
    level = scm_logger.level
    scm_logger.setLevel(logging.WARNING)
    stack.callback(scm_logger.setLevel, level)
    return stack


def _email(by: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", ".", by).strip(".") + "@medunlearn"


def _version_of(message: str) -> str | None:
    head = message.strip().split(":", 1)[0]
    return head if _SEMVER.match(head) else None


def _why(message: str) -> str:
    return message.strip().split(":", 1)[1].strip() if ":" in message else message.strip()


def _tag_entries(blob: str) -> list[tuple[str, str, str, str]]:
    out = []
    for line in blob.splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[0]:
            out.append((parts[0], parts[1], parts[2], parts[3]))
    return out


def _tag_version(root: Path, tag: str) -> str | None:
    return _version_of(_git(root, "tag", "-l", "--format=%(contents:subject)", tag))


def _drop_gitignore_entry(files: Path) -> None:
    ignore = files.parent / ".gitignore"
    if ignore.is_file():
        lines = [ln for ln in ignore.read_text().splitlines() if ln.strip() != f"/{files.name}"]
        if lines:
            ignore.write_text("\n".join(lines) + "\n")
        else:
            ignore.unlink()


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def _changed(root: Path, path: Path) -> bool:
    """``path`` exists and differs from what git has (modified or untracked)."""
    if not path.exists():
        return False
    return bool(_git(root, "status", "--porcelain", "--", str(path.relative_to(root))).strip())


def _commit(root: Path, paths: list[Path], message: str) -> None:
    """Commit exactly ``paths`` (nothing else the user staged), with a fallback identity
    when git has none configured (CI, containers)."""
    rel = [str(p.relative_to(root)) for p in paths if p.exists()]
    _git(root, "add", "--", *rel)
    identity = []
    if subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True).returncode:
        identity = ["-c", "user.name=medunlearn", "-c", "user.email=medunlearn@localhost"]
    _git(root, *identity, "commit", "-q", "-m", message, "--only", "--", *rel)


def active_registry(params: dict[str, Any], root: str | Path = ".") -> tuple[Registry | None, str]:
    """The registry the flows write to, or ``None`` with the reason it is off.

    Off when ``registry.enabled`` is false or absent, inside a DVC stage (``dvc repro`` and
    ``dvc exp run`` own the commits there; the stage writes ``maintain.candidate_dir``), or
    when ``root`` is not a git + DVC repository.
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


def code_commit(root: str | Path = ".") -> str:
    """``git rev-parse HEAD``, with ``+dirty`` when tracked code (medunlearn/, tasks/,
    flows/) differs from it; ``unknown`` outside git."""
    try:
        head = _git(Path(root), "rev-parse", "HEAD").strip()
        dirty = _git(Path(root), "status", "--porcelain", "--", "medunlearn", "tasks", "flows")
    except (RuntimeError, OSError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")
