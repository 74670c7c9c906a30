"""Atomic writes: file and folder modes."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_and_folders_get_a_plain_mode(tmp_path, umask) -> None:
    """Model files are handed to a serving user: never tempfile's private 0600 / 0700.
    The truth is what plain ``open`` and ``mkdir`` give under the same umask (a fresh
    interpreter, so the module reads that umask at import)."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        f"os.umask({umask})\n"
        "from pathlib import Path\n"
        "from medunlearn.atomic import staging_dir, write_text, write_with\n"
        "root = Path(sys.argv[1])\n"
        "open(root / 'plain.txt', 'w').close(); (root / 'plain-dir').mkdir()\n"
        "write_text(root / 'a.txt', 'x')\n"
        "write_with(root / 'b.bin', lambda p: p.write_bytes(b'y'))\n"
        "staging_dir(root, '.stage-').rename(root / 'staged')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)

    def mode(name: str) -> int:
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("a.txt") == mode("b.bin") == mode("plain.txt")
    assert mode("staged") == mode("plain-dir")
    if umask == 0o022:  # by hand: 0666 & ~022, 0777 & ~022
        assert (mode("a.txt"), mode("staged")) == (0o644, 0o755)


@pytest.mark.parametrize("how", ["write_text", "write_with"])
def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, how) -> None:
    """``write`` on a full disk raises ENOSPC without a file name; the refusal must name
    the file, and the old content and the folder stay as they were."""
    import errno
    import os

    from medunlearn import atomic

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if how == "write_text":
        monkeypatch.setattr(os, "fsync", full)
        call = lambda: atomic.write_text(target, "new")  # noqa: E731
    else:
        call = lambda: atomic.write_with(target, lambda p: full())  # noqa: E731
    with pytest.raises(OSError) as raised:
        call()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
