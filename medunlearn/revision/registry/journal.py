"""The write journal and the lock: a killed write is completed or undone, never left half done."""

from __future__ import annotations

import json
import logging
import logging.config
import shutil
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from medunlearn.atomic import orphans, remove_orphans, write_text
from medunlearn.revision.ledger import Ledger
from medunlearn.revision.registry.base import JOURNAL, LOCK, RECORD, RegistryBusy, RegistryError
from medunlearn.revision.registry.dvcfiles import _drop_gitignore_entry, _dvc_file
from medunlearn.revision.registry.git import _git
from medunlearn.revision.registry.tags import _tag_version


class Journal:
    """The lock, the journal of a write's steps, and the repair of a killed write.

    A part of :class:`~medunlearn.revision.registry.core.Registry` (a mixin, never built on
    its own): it writes the lock and journal files at the repository root and, to repair,
    uses the other parts through ``self`` (``record_dir``, ``files_dir``, ``events``,
    ``current``, ``served``, ``materialise`` and the tag writers).

    Attributes:
        root: the repository root (``Path``), where ``LOCK`` and ``JOURNAL`` live.
        lock_timeout: seconds a write waits for the lock before :class:`RegistryBusy`.
        models_dir: revision folders, relative to ``root`` (staging folders looked for there).
        records_dir: record folders, relative to ``root``.
        serving_dir: the serving folder, relative to ``root``.
    """

    # --- writing -----------------------------------------------------------------------
    def lock(self) -> FileLock:
        """Make the registry's file lock (not yet held).

        Returns:
            a :class:`filelock.FileLock` on ``root/.medunlearn-registry.lock`` that waits up to
            ``lock_timeout`` seconds when acquired.
        """
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
        """Hold the registry lock, after finishing any write a killed process left half done.

        See :meth:`repair`.
        """
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
        """Tell whether a killed write left its journal (:meth:`repair` before reading).

        Returns:
            True when ``root/.medunlearn-registry.journal.json`` exists.
        """
        return (self.root / JOURNAL).is_file()

    def repair(self) -> str | None:
        """Bring the registry to a consistent state after a killed write.

        Every write does this first anyway: the journalled write is completed or undone, and
        the staging folders of runs no longer running are removed. Holds the lock meanwhile.

        Returns:
            what was done, ``; ``-joined, or None when nothing was pending.

        Raises:
            RegistryBusy: another run held the lock past ``lock_timeout`` seconds.
            RegistryError: a recent ``.git/index.lock`` (under 60 s old) may belong to a live
                git process: repair again later.
        """
        lock = self._acquire()
        try:
            did = [d for d in (self._recover(quiet=True), self._remove_orphans()) if d]
            return "; ".join(did) or None
        finally:
            lock.release()

    def orphans(self) -> bool:
        """Tell whether a killed run left a staging folder behind (:meth:`repair` removes it).

        Returns:
            True when a ``.revision-``, ``.record-`` or ``.serving-`` staging folder of a run
            that no longer runs exists.
        """
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
        """Remove the staging folders of runs that are no longer running.

        A kill during an export, a record or a serving swap leaves one; a live run's are left
        alone.
        """
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
        rollback has its production files put back to what the stage tags say.
        """
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

    def _undo(self, name: str, version: str, done: list[str], source: Path) -> None:
        """Reverse the steps a failed registration took (``done``), newest first.

        What an earlier revision wrote is never touched.
        """
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
