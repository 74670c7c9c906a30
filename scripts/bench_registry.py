"""Seconds of the registry's operations on a 50 MB checkpoint (BENCHMARKS.md, issue 13).

    python scripts/bench_registry.py [--mb 50] [--out reports/bench_registry.json]

In a throwaway git + DVC repository with a local remote: register two revisions (each a
50 MB checkpoint + a 5 MB ONNX file of random bytes), promote through staging to production,
then roll production back after deleting the older revision's files from the workspace
*and* the DVC cache, so the rollback materialises them from the remote. Each step's wall
seconds, and whether the served files are byte-identical to the originals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medunlearn.revision.registry import Registry  # noqa: E402


def sh(cwd: Path, *args: str) -> None:
    if args[0] == "dvc":
        args = (sys.executable, "-m", "dvc", *args[1:])
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def payload(folder: Path, mb: int, seed: int) -> str:
    folder.mkdir(parents=True)
    data = bytes((seed * 7919 + i) % 251 for i in range(1 << 16))  # 64 KiB, per seed
    with open(folder / "model.pt", "wb") as f:
        for _ in range(mb * 16):
            f.write(data)
    (folder / "model.onnx").write_bytes(data * 80)  # 5 MiB
    return hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench_registry.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    repo = tmp / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.name", "bench")
    sh(repo, "git", "config", "user.email", "bench@localhost")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "remote", "add", "-d", "local", str(tmp / "remote"))
    (repo / ".gitignore").write_text("/.medunlearn-registry.lock\n/models/production/\n/src*/\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")
    reg = Registry(repo)
    seconds: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        out = fn()
        seconds[name] = round(time.perf_counter() - start, 2)
        return out

    first = payload(repo / "src1", args.mb, 1)
    timed(
        "register v1.0.0",
        lambda: reg.register("m", repo / "src1", {"gates": {"passed": True}}, "v1.0.0"),
    )
    timed("promote staging", lambda: reg.promote("m", "v1.0.0", "staging", "bench", "x"))
    timed(
        "promote production (materialise)",
        lambda: reg.promote("m", "v1.0.0", "production", "bench", "x"),
    )
    payload(repo / "src2", args.mb, 2)
    timed(
        "register v1.1.0",
        lambda: reg.register(
            "m", repo / "src2", {"gates": {"passed": True}, "parent": "v1.0.0"}, "v1.1.0"
        ),
    )
    reg.promote("m", "v1.1.0", "staging", "bench", "x")
    reg.promote("m", "v1.1.0", "production", "bench", "x")
    shutil.rmtree(repo / "models" / "m" / "v1.0.0")
    shutil.rmtree(repo / ".dvc" / "cache")
    timed("rollback from the remote", lambda: reg.rollback("m", "production", None, "bench", "x"))
    served = hashlib.sha256((repo / "models" / "production" / "model.pt").read_bytes()).hexdigest()
    result = {
        "checkpoint_mb": args.mb,
        "seconds": seconds,
        "rollback_byte_identical": served == first,
        "command": "python scripts/bench_registry.py",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
