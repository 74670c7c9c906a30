"""Atomic file and directory writes.

A failed run must never leave a half-written checkpoint, report or dataset where a good one
was: every write goes to a temporary sibling first and is moved into place with
``os.replace``, which is atomic on POSIX file systems.

``tempfile`` makes its files 0600 and folders 0700 (private to the writer); a model file
or report handed on to a serving user must not be, so every file and folder made here gets
the mode a plain ``open`` / ``mkdir`` would give it (0666 / 0777 less the process umask,
read once at import: changing the umask is process-wide, so it is not probed per write
while Prefect's task threads run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what open(path, "w") gives a new file
DIR_MODE = 0o777 & ~UMASK  # what mkdir gives a new folder


def staging_dir(parent: str | Path, prefix: str, suffix: str = "") -> Path:
    """A new empty folder in ``parent`` (made if needed) with a plain folder's mode, for
    files that are moved into place as one rename (``tempfile.mkdtemp`` would make it 0700).
    Its name carries this process's id (``<prefix><pid>-<random>``), so a folder a killed
    run left behind is recognised and removed by :func:`remove_orphans`.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=parent))
    os.chmod(folder, DIR_MODE)
    return folder


def remove_orphans(parent: str | Path, prefixes: tuple[str, ...]) -> list[str]:
    """Delete the staging folders in ``parent`` (``<prefix><pid>-...``, see
    :func:`staging_dir`) whose process is no longer running on this machine: what a run
    killed mid-write left behind. A folder of a live process (another run writing now) is
    left alone. Returns the names removed."""
    removed = []
    for entry in orphans(parent, prefixes):
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def orphans(parent: str | Path, prefixes: tuple[str, ...]) -> list[Path]:
    """The staging folders in ``parent`` whose process is no longer running."""
    parent = Path(parent)
    found = []
    if not parent.is_dir():
        return found
    for entry in sorted(parent.iterdir()):
        for prefix in prefixes:
            rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            pid = rest.split("-", 1)[0]
            if entry.is_dir() and pid.isdigit() and not _alive(int(pid)):
                found.append(entry)
                break
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from exc
    return path


def _naming(exc: BaseException, path: Path) -> BaseException:
    """An ``OSError`` raised while writing (a full disk: ``write`` names no file) as one
    naming the target, so the one-line refusal says which file could not be written."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (stable diffs under DVC)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Let ``writer`` fill a temporary path, then move it over ``path`` atomically.

    For libraries that insist on writing to a path themselves (``torch.save``, ONNX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from exc
    return path


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` only if the block succeeds.

    On error the staging folder is removed and ``target`` is left exactly as it was. On
    success an existing ``target`` is first renamed aside, the staged folder is renamed into
    place, and only then is the old copy deleted, so ``target`` is never missing or partial.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(target.parent, f".{target.name}.", ".staging")
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_directory(path: str | Path) -> None:
    """Rename aside, then delete: the folder is never seen half-removed."""
    target = Path(path)
    if target.exists():
        aside = target.with_name(f".{target.name}.removed-{os.getpid()}")
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)


def copy_files(paths: list[str | Path | None], dest: str | Path) -> None:
    """Copy the files that exist among ``paths`` into folder ``dest`` (made if needed)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p and Path(p).is_file():
            shutil.copy2(p, dest / Path(p).name)


def _json_default(obj: Any) -> Any:
    """Serialise numpy scalars/arrays and paths that ``json`` does not know."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
