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

The package, by concern: ``base`` (names, errors), ``git``, ``tags`` (GTO), ``dvcfiles``
(DVC), ``journal`` (lock, journal, repair), ``serving`` (the serving folder) and ``core``
(:class:`Registry`, the one interface over them).
"""

from medunlearn.revision.registry.base import (
    JOURNAL,
    LOCK,
    RECORD,
    SERVED_FILE,
    STAGES,
    RegistryBusy,
    RegistryError,
    StageEvent,
    artifact_hashes,
    semver,
)
from medunlearn.revision.registry.core import Registry, active_registry
from medunlearn.revision.registry.dvcfiles import in_dvc_stage
from medunlearn.revision.registry.git import code_commit
from medunlearn.revision.registry.tags import gto_api

__all__ = [
    "STAGES",
    "RECORD",
    "LOCK",
    "JOURNAL",
    "SERVED_FILE",
    "RegistryError",
    "RegistryBusy",
    "StageEvent",
    "semver",
    "artifact_hashes",
    "code_commit",
    "gto_api",
    "in_dvc_stage",
    "Registry",
    "active_registry",
]
