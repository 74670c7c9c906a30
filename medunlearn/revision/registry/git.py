"""Git: the one-commit-per-write helpers and the code commit a record names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


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
    """Commit exactly ``paths`` (nothing else the user staged).

    Uses a fallback identity when git has none configured (CI, containers).
    """
    rel = [str(p.relative_to(root)) for p in paths if p.exists()]
    _git(root, "add", "--", *rel)
    identity = []
    if subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True).returncode:
        identity = ["-c", "user.name=medunlearn", "-c", "user.email=medunlearn@localhost"]
    _git(root, *identity, "commit", "-q", "-m", message, "--only", "--", *rel)


def code_commit(root: str | Path = ".") -> str:
    """Name the code commit a record was made from.

    Args:
        root: the git repository (its working tree).

    Returns:
        ``git rev-parse HEAD`` (40 hex digits), with ``+dirty`` appended when code under
        ``medunlearn/``, ``tasks/`` or ``flows/`` differs from it (modified or untracked);
        ``unknown`` outside git or when git cannot run.
    """
    try:
        head = _git(Path(root), "rev-parse", "HEAD").strip()
        dirty = _git(Path(root), "status", "--porcelain", "--", "medunlearn", "tasks", "flows")
    except (RuntimeError, OSError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def _email(by: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", ".", by).strip(".") + "@medunlearn"
