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
    """Make a new empty staging folder with a plain folder's mode.

    The folder is for files that are moved into place as one rename (``tempfile.mkdtemp``
    alone would make it 0700, private to the writer). Its name carries this process's id
    (``<prefix><pid>-<random><suffix>``), so a folder a killed run left behind is recognised
    and removed by :func:`remove_orphans`.

    Args:
        parent: folder to create it in (made, with its parents, if needed).
        prefix: start of the folder's name, before the process id.
        suffix: end of the folder's name.

    Returns:
        The new folder's path, mode :data:`DIR_MODE` (0777 less the umask).

    Raises:
        OSError: ``parent`` cannot be made or written to.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=parent))
    os.chmod(folder, DIR_MODE)
    return folder


def remove_orphans(parent: str | Path, prefixes: tuple[str, ...]) -> list[str]:
    """Delete the staging folders a killed run left behind in ``parent``.

    A staging folder (``<prefix><pid>-...``, see :func:`staging_dir`) is removed only when
    its process is no longer running on this machine: a folder of a live process (another
    run writing now) is left alone. Removal errors are ignored (best effort).

    Args:
        parent: folder to clean; a missing folder holds nothing to remove.
        prefixes: name prefixes of the staging folders to consider.

    Returns:
        The names (not paths) of the folders removed, in sorted order.
    """
    removed = []
    for entry in orphans(parent, prefixes):
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def orphans(parent: str | Path, prefixes: tuple[str, ...]) -> list[Path]:
    """List the staging folders in ``parent`` whose process is no longer running.

    Args:
        parent: folder to look in; a missing folder gives an empty list.
        prefixes: name prefixes of staging folders (``<prefix><pid>-...``).

    Returns:
        Paths of the orphaned folders, sorted by name.
    """
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
    """Write ``data`` to ``path`` atomically: a temporary sibling, fsync, then ``os.replace``.

    The parent folder is made if needed; the file gets :data:`FILE_MODE` (0666 less the
    umask). On any error the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the file to write.
        data: its complete new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the write failed; an error that named no file (a full disk) is re-raised
            naming ``path``.
    """
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
    """Return an ``OSError`` raised while writing as one naming the target file.

    A full disk's ``write`` error names no file; the one-line refusal must say which file
    could not be written. Other exceptions are returned unchanged.
    """
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`write_bytes`).

    Args:
        path: the file to write.
        text: its complete new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the write failed (naming ``path``).
    """
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (stable diffs under DVC).

    numpy scalars and arrays are written as Python numbers and lists, paths as text.

    Args:
        path: the file to write.
        obj: a JSON-serialisable value (numpy values and paths allowed).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot represent.
        OSError: the write failed (naming ``path``).
    """
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Let ``writer`` fill a temporary path, then move it over ``path`` atomically.

    For libraries that insist on writing to a path themselves (``torch.save``, ONNX). On
    any error (the writer's included) the temporary file is removed and ``path`` is left
    as it was.

    Args:
        path: the file to write.
        writer: called once with the temporary path (a sibling of ``path``) to write to.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the write or rename failed (naming ``path``). Whatever ``writer`` raises
            propagates unchanged otherwise.
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

    Args:
        target: the folder to (re)place; its parent is made if needed.

    Yields:
        The staging folder (a sibling of ``target``, plain folder mode) to fill.
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
    """Remove a folder by renaming it aside, then deleting it: never seen half-removed.

    Args:
        path: the folder; nothing happens if it does not exist.
    """
    target = Path(path)
    if target.exists():
        aside = target.with_name(f".{target.name}.removed-{os.getpid()}")
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)


def copy_files(paths: list[str | Path | None], dest: str | Path) -> None:
    """Copy the files that exist among ``paths`` into the folder ``dest`` (made if needed).

    Missing paths and ``None`` entries are skipped; each copy keeps its name and metadata
    (``shutil.copy2``). Not atomic: for evidence bundles built inside a staged folder.

    Args:
        paths: candidate files.
        dest: folder to copy them into.
    """
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
