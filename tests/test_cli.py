"""``medunlearn``: exit codes 0 / 1 refused / 2 usage, one-line refusals, a normal exit."""

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


@pytest.mark.parametrize(
    ("args", "status"),
    [(["--version"], 0), (["show", "{dir}/missing.pt"], 1), (["promote"], 2)],
)
def test_the_interpreter_exits_normally_with_the_commands_status(tmp_path, args, status):
    """0 done, 1 refused, 2 usage; the interpreter's own exit runs: ``atexit`` functions
    and the module teardown (a finaliser only the teardown runs), output flushed."""
    marker = tmp_path / "exit.txt"
    argv = ["medunlearn", *(a.format(dir=tmp_path) for a in args)]
    done = _run(
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'a').write('atexit,'))\n"
        "class Finaliser:\n"
        "    def __del__(self, open=open):  # builtins are gone by then\n"
        f"        open({str(marker)!r}, 'a').write('torn down')\n"
        "kept = Finaliser()\n"
        "sys.stdout.write('buffered, no newline')\n"
        f"sys.argv = {argv!r}\n"
        "from cli.main import run\n"
        "run()\n",
        tmp_path,
    )
    assert done.returncode == status, done.stderr
    assert done.stdout.startswith("buffered, no newline")
    assert marker.read_text() == "atexit,torn down"


def _files(tmp_path: Path) -> dict[str, Path]:
    """Bad inputs issue 27 found answered with a traceback, generated here."""
    import yaml

    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 2)  # not a torch file
    (tmp_path / "bad.yaml").write_text("reason: [unclosed\n")  # malformed YAML
    (tmp_path / "empty.csv").write_text("")  # an empty manifest
    negative = {**shipped, "train": {**shipped["train"], "epochs": -1}}
    (tmp_path / "negative.yaml").write_text(yaml.safe_dump(negative))
    empty = {
        **shipped,
        "data": {
            **shipped["data"],
            "source": "csv",
            "path": str(tmp_path / "empty.csv"),
            "root": str(tmp_path / "data"),
        },
    }
    (tmp_path / "empty.params.yaml").write_text(yaml.safe_dump(empty))
    # a 60 x 50 image (3000 pixels) in row 2 against a 2500-pixel bound
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "img" / "ok.png")
    Image.new("L", (60, 50)).save(tmp_path / "img" / "big.png")
    (tmp_path / "big.csv").write_text(
        "image_id,path,label,split\n"
        "a,img/ok.png,x,train\nb,img/big.png,y,train\nc,img/ok.png,x,val\nd,img/ok.png,y,test\n"
    )
    big = {
        **empty,
        "data": {**empty["data"], "path": str(tmp_path / "big.csv"), "max_image_pixels": 2500},
    }
    (tmp_path / "big.params.yaml").write_text(yaml.safe_dump(big))
    nosuch = {**shipped, "train": {**shipped["train"], "dataset": str(tmp_path / "nosuch")}}
    (tmp_path / "nosuch.yaml").write_text(yaml.safe_dump(nosuch))
    return {"dir": tmp_path}


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["show", "{dir}/missing.pt"], 1, "{dir}/missing.pt: checkpoint not found"),
        (["show", "{dir}/random.pt"], 1, "{dir}/random.pt: not a loadable weights-only"),
        (["train", "--params", "{dir}/negative.yaml"], 1, "train.epochs: input should be"),
        (["prepare", "--params", "{dir}/empty.params.yaml"], 1, "{dir}/empty.csv: empty manifest"),
        (["request", "add", "{dir}/bad.yaml"], 1, "{dir}/bad.yaml: not valid YAML (line 2"),
        # a refusal inside a Prefect task: said once (was four times, with tracebacks)
        (["train", "--params", "{dir}/nosuch.yaml"], 1, "{dir}/nosuch/dataset.json: dataset"),
        (
            ["prepare", "--params", "{dir}/big.params.yaml"],
            1,
            "row 2 (image_id=b), column 'path': {dir}/img/big.png: 60 x 50 pixels, more than "
            "the 2,500 decoded at most (data.max_image_pixels",
        ),
    ],
)
def test_a_refusal_is_one_line_with_its_status_and_no_traceback(tmp_path, args, status, message):
    """As a user sees it: the file and the key or row named in one line, exit 1 (refused
    input, a bad setting, or a rule saying no), no traceback (issue 27)."""
    import os

    where = _files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "cli", *(a.format(**where) for a in args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    assert done.returncode == status, done.stderr[-2000:]
    assert message.format(**where) in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    said = [line for line in done.stderr.splitlines() if message.format(**where) in line]
    assert len(said) == 1, done.stderr[-2000:]  # said once, on one line


def test_version_and_help_are_answered_without_a_project(tmp_path) -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "cli", "--version"],
        cwd=tmp_path,  # no params.yaml here: nothing is loaded
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0 and done.stdout.strip() == f"medunlearn {version('medunlearn')}"


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["revise", "--help"], ["--json", "--refresh-cache"]),
        (["registry", "--help"], ["--json", "--repair"]),
        (["bench", "--help"], ["--quick", "--models-only"]),
    ],
)
def test_help_shows_flags_without_a_value(capsys, args, flags) -> None:
    """A flag takes no value, and its help line says none (it said ``<bool>``, which invited
    ``--json true``: issue 28 review)."""
    from cli.main import main

    main(args)
    out = capsys.readouterr().out
    for flag in flags:
        line = next(ln for ln in out.splitlines() if f"{flag} " in ln)
        assert "<bool>" not in line, line
