"""GTO tags: versions (``name@vX.Y.Z``) and stage assignments (``name#stage#N``).

Read in assignment order (see the package docstring for why not ``gto show``).
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
import threading
from pathlib import Path
from typing import Any

from medunlearn.revision.registry.base import _SEMVER, STAGES, StageEvent, semver
from medunlearn.revision.registry.git import _email, _git

_ASSIGN = re.compile(r"^(?P<name>[^#@]+)#(?P<stage>[^#!]+)(?P<un>!?)#(?P<n>\d+)$")
_GTO_IMPORT = threading.Lock()


def gto_api() -> Any:
    """``gto.api``, imported without GTO's logging set-up.

    ``gto/log.py`` calls ``logging.config.dictConfig`` at import time, which flushes and
    closes every logging handler in the process. Imported inside a Prefect flow run, that
    flush waits for Prefect's API log worker while Prefect's event-loop thread waits for the
    logging lock the flush holds: a deadlock (a `medunlearn train` hung for minutes at
    ``register_revision``, 2026-12-01). So GTO's module is imported once with ``dictConfig``
    made a no-op; its ``gto`` logger then propagates to the process's handlers.

    Returns:
        the ``gto.api`` module (register, assign, unassign, show).
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


class TagLog:
    """Versions and stages from the GTO tags.

    A part of :class:`~medunlearn.revision.registry.core.Registry` (a mixin, never built on
    its own): it reads the tags of the git repository at ``self.root`` and the registered
    versions through ``self.versions`` (the records).

    Attributes:
        root: the repository root (``Path``), set by ``Registry``.
    """

    def events(self, name: str) -> list[StageEvent]:
        """Read every stage assignment and unassignment tag of a model.

        Args:
            name: the model (artifact) name.

        Returns:
            one :class:`StageEvent` per ``name#stage#N`` or ``name#stage!#N`` tag, sorted by
            GTO's assignment number ``N``; empty when the model has none.

        Raises:
            RuntimeError: ``git for-each-ref`` failed (the message carries git's stderr).
        """
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
        """List the stage events of one version: the promotion history a revision card shows.

        Args:
            name: the model name.
            version: the version, ``vX.Y.Z``.

        Returns:
            in assignment order, one dict per assignment of ``version`` or unassignment naming
            it: ``stage`` (``left <stage>`` for an unassignment), ``by``, ``at`` (ISO 8601),
            ``why`` and ``tag``.
        """
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
        """Read the version currently in each stage.

        Args:
            name: the model name.

        Returns:
            every stage of :data:`STAGES` -> the version of its latest assignment, or None
            when never assigned or last unassigned.
        """
        current: dict[str, str | None] = {s: None for s in STAGES}
        for event in self.events(name):
            current[event.stage] = None if event.removed else event.version
        return current

    def current(self, name: str, stage: str) -> str | None:
        """Read the version currently in one stage.

        Args:
            name: the model name.
            stage: a stage name (candidate, staging, production).

        Returns:
            the version of the stage's latest assignment; None when the stage is empty or
            unknown.
        """
        return self.stages(name).get(stage)

    def next_version(self, name: str, bump: str, parent: str | None = None) -> str:
        """Plan the next version of a model.

        ``major``: the next major line (v1.0.0 first); ``minor``: the parent's major with the
        next free minor (v1.1.0 after v1.0.0, v1.2.0 after v1.1.0).

        Args:
            name: the model name.
            bump: ``major`` or ``minor`` (anything else counts as ``minor``); a model with no
                version gets ``v1.0.0`` either way.
            parent: the version being revised, whose major line a minor bump stays on
                (default: the highest major registered).

        Returns:
            the version, ``vX.Y.0``; registration fails by name if another run took it first.

        Raises:
            RegistryError: from :func:`semver`, ``parent`` is not a version.
        """
        versions = [semver(v) for v in self.versions(name)]
        if bump == "major" or not versions:
            major = max((v[0] for v in versions), default=0) + 1
            return f"v{major}.0.0"
        base = semver(parent)[0] if parent else max(versions)[0]
        minor = max((v[1] for v in versions if v[0] == base), default=0) + 1
        return f"v{base}.{minor}.0"

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
