"""``medunlearn`` ends without the interpreter's teardown, but loses nothing on the way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


@pytest.mark.parametrize(("code", "status", "stderr"), [(None, 0, ""), (3, 3, ""), ("no", 1, "no")])
def test_exit_functions_run_output_is_flushed_and_the_status_kept(tmp_path, code, status, stderr):
    marker = tmp_path / "atexit.txt"
    done = _run(
        "import atexit, sys, threading\n"
        "from flows.cli import exit_process\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'a').write('atexit'))\n"
        # Prefect drains its log and event workers in threading's exit hooks, which a
        # normal exit runs before the atexit functions (a temporary server stops there)
        f"threading._register_atexit(lambda: open({str(marker)!r}, 'a').write('threads,'))\n"
        "sys.stdout.write('buffered, no newline')\n"  # sits in the buffer until flushed
        f"exit_process({code!r})\n"
        "print('not reached')\n",
        tmp_path,
    )
    assert done.returncode == status
    assert done.stdout == "buffered, no newline"
    assert done.stderr.strip() == stderr
    assert marker.read_text() == "threads,atexit"  # both, in a normal exit's order


def test_a_live_worker_thread_is_waited_for(tmp_path):
    """A non-daemon thread still working keeps the normal exit, which joins it."""
    marker = tmp_path / "thread.txt"
    done = _run(
        "import threading, time\n"
        "from flows.cli import exit_process\n"
        "def work():\n"
        "    time.sleep(1.0)\n"
        f"    open({str(marker)!r}, 'w').write('finished')\n"
        "threading.Thread(target=work).start()\n"
        "exit_process(0)\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "finished"


@pytest.mark.parametrize(
    ("ending", "torn_down"), [("exit_process(0)", False), ("sys.exit(0)", True)]
)
def test_the_module_teardown_is_skipped(tmp_path, ending, torn_down):
    """A finaliser that only the interpreter's teardown runs: skipped by ``exit_process``
    (the ~2 s it saves), run by a plain ``sys.exit`` (the control)."""
    marker = tmp_path / "teardown.txt"
    done = _run(
        "import sys\n"
        "from flows.cli import exit_process\n"
        "class Finaliser:\n"
        "    def __del__(self, open=open):  # builtins are gone by then\n"
        f"        open({str(marker)!r}, 'w').write('torn down')\n"
        "kept = Finaliser()\n"
        f"{ending}\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert marker.exists() is torn_down
