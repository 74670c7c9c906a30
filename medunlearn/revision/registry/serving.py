"""The serving folder: production's files, replaced as one and only with a servable version."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medunlearn.atomic import staging_dir
from medunlearn.revision.registry.base import SERVED_FILE, RegistryError
from medunlearn.versioning import file_sha256


class Serving:
    """Production's files in the serving folder.

    A part of :class:`~medunlearn.revision.registry.core.Registry` (a mixin, never built on
    its own): it reads records and revision folders through ``self.record`` and
    ``self.files_dir``, checks them with ``self._require_intact`` and journals a swap with
    ``self._journal``.

    Attributes:
        root: the repository root (``Path``).
        serving_dir: the serving folder, relative to ``root`` (``models/production``).
    """

    def production_checkpoint(self, name: str, version: str) -> Path:
        """Find a revision's checkpoint, verified against its record.

        Fetched from the DVC cache or remote when absent.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            the path of ``model.pt`` in the revision folder.

        Raises:
            RegistryError: from the record check, an unknown version or files that differ from
                the record.
        """
        self._require_intact(name, version)
        return self.files_dir(name, version) / "model.pt"

    def materialise(self, name: str, version: str) -> dict[str, str]:
        """Copy a revision's files to ``serving_dir``, swapped in as one folder.

        The folder also gets ``SERVING.json`` (model and version); the previous folder is
        replaced only once every copy matches the record.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            hex sha256 of each file served, by relative path (equal to the record's
            ``artifacts``).

        Raises:
            RegistryError: the copies differ from the record; or (before anything is copied)
                an unknown version, a version without ``model.onnx``, or a serving folder
                that serves another model.
        """
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
        """The version's record, refusing a version without an ONNX file.

        A rollback or promotion must never leave the serving folder without one.
        """
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
        """Read what the serving folder holds.

        Returns:
            the parsed ``serving_dir/SERVING.json`` (``model``, ``version``), or None when it
            is absent or unreadable.
        """
        path = self.root / self.serving_dir / "SERVING.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _serve_then_tag(self, name: str, version: str, tag: Callable[[], None]) -> dict:
        """Swap the production files in, then write the stage tag(s).

        If tagging fails the previous production files are put back, so registry and serving
        never disagree.
        """
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
