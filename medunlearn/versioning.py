"""Data and model versions, as DVC sees them.

The data version recorded in every checkpoint is the DVC hash of ``data/`` (from
``data.dvc``), marked ``+modified`` when the folder no longer matches it, so a model can
always be traced to the exact data it saw, or be seen not to be traceable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

CORE = Path(__file__).resolve().parent


def source_hash(
    root: Path = CORE, parts: tuple[str, ...] = (".",), exclude: tuple[str, ...] = ()
) -> str:
    """Hash the Python sources under ``root/parts``: cache keys include it.

    A fix in the core therefore invalidates every result computed before. Files are read in
    sorted path order, each contributing its path relative to ``root`` and its bytes;
    ``__pycache__`` is skipped.

    Args:
        root: folder the parts and exclusions are relative to (default: the core package).
        parts: folders (all ``*.py`` below them) or single files to hash.
        exclude: folders or files to leave out, relative to ``root``.

    Returns:
        The first 16 hex digits of the SHA-256.

    Raises:
        OSError: a listed file cannot be read.
    """
    digest = hashlib.sha256()
    skipped = [(root / e).resolve() for e in exclude]
    for part in parts:
        target = (root / part).resolve()
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in files:
            if "__pycache__" in path.parts:
                continue
            if any(path == s or s in path.parents for s in skipped):
                continue
            digest.update(path.relative_to(root.resolve()).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def dvc_file_hash(dvc_file: str | Path) -> str | None:
    """Read the md5 a ``.dvc`` file records for its (single) output.

    Args:
        dvc_file: the ``.dvc`` file.

    Returns:
        The output's md5 (32 hex digits), or ``None`` when the file does not exist or lists
        no output.

    Raises:
        yaml.YAMLError: the file is not valid YAML.
    """
    path = Path(dvc_file)
    if not path.is_file():
        return None
    spec = yaml.safe_load(path.read_text()) or {}
    outs = spec.get("outs") or []
    return outs[0].get("md5") if outs else None


def data_version(dvc_file: str | Path = "data.dvc") -> str | None:
    """Return DVC's hash of the tracked data, marked when it changed since ``dvc add``.

    Args:
        dvc_file: the ``.dvc`` file of the data folder (``data.dvc``).

    Returns:
        ``<md5>`` when the data matches the recorded hash, ``<md5>+modified`` when DVC's
        status reports a change, ``None`` outside a DVC project (e.g. a library user's own
        folder) or without the ``.dvc`` file.
    """
    recorded = dvc_file_hash(dvc_file)
    if recorded is None:
        return None
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    path = Path(dvc_file).resolve()
    try:
        with Repo(str(path.parent)) as repo:
            status = repo.status(targets=[str(path)])
    except NotDvcRepoError:
        return None
    return recorded if not status else f"{recorded}+modified"


def track_with_dvc(path: str | Path = "data") -> str:
    """Run ``dvc add`` on a folder (cached, ``.dvc`` file written) and return its new hash.

    Args:
        path: the folder to track; the DVC repository is its parent folder.

    Returns:
        The md5 DVC recorded for it.

    Raises:
        RuntimeError: ``dvc add`` wrote no hash into the ``.dvc`` file.
    """
    from dvc.repo import Repo

    path = Path(path).resolve()
    with Repo(str(path.parent)) as repo:
        repo.add(str(path))
    version = dvc_file_hash(path.with_name(path.name + ".dvc"))
    if version is None:
        raise RuntimeError(f"dvc add {path} wrote no hash")
    return version


def dataset_fingerprint(directory: str | Path) -> str:
    """Hash a materialised dataset's content: every file, by relative path and bytes.

    Cache keys and revision ids use it so that a changed pixel with an unchanged manifest (an
    image mirrored in place) is a different input. It covers every file under ``directory``
    (manifest, ``dataset.json``, images) in sorted order. Not DVC's md5: that needs DVC's
    directory hashing and an index; this is the same guarantee (content, pixels included)
    computed from the folder alone, in about 0.1 s for the 689-image HAM10000 subset.

    Args:
        directory: the dataset's folder (``data/<name>``).

    Returns:
        The SHA-256 as 64 hex digits (of an empty digest when the folder is empty or missing).

    Raises:
        OSError: a file cannot be read.
    """
    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hash one file's bytes, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The SHA-256 as 64 hex digits.

    Raises:
        OSError: the file cannot be opened or read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
