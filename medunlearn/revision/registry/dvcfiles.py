"""DVC: a revision's files tracked, pushed, fetched and checked against their record."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from medunlearn.models.checkpoint import CheckpointError, weights_sha256
from medunlearn.revision.registry.base import RegistryError
from medunlearn.versioning import file_sha256


def in_dvc_stage() -> bool:
    """Tell whether this process runs inside a ``dvc repro``/``dvc exp run`` stage.

    DVC writes ``dvc.lock`` (and experiments their own commits) after the stage, so a stage
    never commits or tags.

    Returns:
        True when the ``DVC_STAGE`` environment variable is set and not empty.
    """
    return bool(os.environ.get("DVC_STAGE"))


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
    """Silence DVC's git hints ("To track the changes with git, run: ...") on stdout.

    The registry commits those files itself.
    """
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    scm_logger = logging.getLogger("dvc.repo.scm_context")
    level = scm_logger.level
    scm_logger.setLevel(logging.WARNING)
    stack.callback(scm_logger.setLevel, level)
    return stack


def _drop_gitignore_entry(files: Path) -> None:
    ignore = files.parent / ".gitignore"
    if ignore.is_file():
        lines = [ln for ln in ignore.read_text().splitlines() if ln.strip() != f"/{files.name}"]
        if lines:
            ignore.write_text("\n".join(lines) + "\n")
        else:
            ignore.unlink()


class DvcFiles:
    """A revision's DVC-tracked files.

    A part of :class:`~medunlearn.revision.registry.core.Registry` (a mixin, never built on
    its own): it runs DVC in the repository at ``self.root`` and reads a revision's record
    and folder through ``self.record``, ``self.files_dir`` and ``self.versions``.

    Attributes:
        root: the repository root (``Path``), set by ``Registry``.
    """

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
        """Check a revision's files against the sha256 its record holds.

        Files absent from the working tree are first fetched from the DVC cache or remote
        (:meth:`fetch`).

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            one line per file that does not match, ``<path> (missing)`` or ``<path> (sha256
            differs from the record)``; empty when the revision is intact.

        Raises:
            RegistryError: from ``self.record``, an unknown model or version.
        """
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
        """Bring a revision's files into the working tree from the DVC cache or remote.

        ``dvc checkout --force`` of its ``.dvc`` file, and ``dvc pull --force`` when the cache
        lacks them.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.
        """
        from dvc.repo import Repo

        dvc_file = str(_dvc_file(self.files_dir(name, version)))
        with _quiet(), Repo(str(self.root)) as repo:
            try:
                repo.checkout(targets=[dvc_file], force=True)
            except Exception:  # noqa: BLE001 - not in the cache: ask the remote
                repo.pull(targets=[dvc_file], force=True)

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

    # --- helpers -----------------------------------------------------------------------
    def _same_revision(self, name: str, source: Path, record: dict[str, Any]) -> str | None:
        """A registered version with the same weights, parent and request ids.

        For a ``model.pt`` that is not a checkpoint, the same bytes count instead.
        """
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
