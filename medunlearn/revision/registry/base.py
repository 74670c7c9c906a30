"""What every part of the registry shares.

Stages, file names, the errors, a stage event, versions and hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medunlearn.errors import Refusal
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
SERVED_FILE = "model.onnx"  # what a serving folder must always hold


class RegistryError(Refusal, RuntimeError):
    """A registry rule refused the operation; the message names the rule (CLI exit 1)."""


class RegistryBusy(RegistryError):
    """Another run holds the registry lock, or registered the version this run planned.

    Nothing was written; running again succeeds (a request stays pending).
    """


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
    """Parse a version tag: ``v1.2.0`` -> (1, 2, 0).

    Args:
        version: ``v<major>.<minor>.<patch>`` (the ``v`` required).

    Returns:
        ``(major, minor, patch)`` as integers, ordered as versions compare.

    Raises:
        RegistryError: ``version`` is empty or not of that form (the message names the form).
    """
    match = _SEMVER.match(version or "")
    if not match:
        raise RegistryError(f"'{version}' is not a version of the form v<major>.<minor>.<patch>")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def artifact_hashes(folder: Path) -> dict[str, str]:
    """Hash every file in a revision folder.

    Args:
        folder: the revision folder (``models/<name>/<version>/``), read recursively.

    Returns:
        hex sha256 of each file, keyed by its POSIX path relative to ``folder``, in path
        order; empty for an empty or missing folder.
    """
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
