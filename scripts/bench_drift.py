"""Time and peak memory of a drift watch on a large incoming batch.

    python scripts/bench_drift.py --project . [--images 10000] [--max-images 1000 10000]

Writes ``--images`` PNG files (the project's held-out images, repeated, each with a little
noise, device values kept) and their manifest into a temporary folder, then runs
``medunlearn drift`` in a child process per ``--max-images`` value (a params copy that
changes only ``drift.max_images``, ``drift.incoming`` and ``drift.report``) and reports its
wall seconds and peak resident memory (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default=".")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--max-images", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    project = Path(args.project).resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    dataset = project / params["maintain"]["dataset"]
    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str)
    held_out = manifest[manifest["split"] != "train"].reset_index(drop=True)
    work = Path(tempfile.mkdtemp(prefix="medunlearn-drift-bench-"))
    (work / "batch" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(args.images):
        src = held_out.iloc[i % len(held_out)]
        pixels = np.asarray(Image.open(dataset / src["path"]), dtype=np.float32)
        noisy = np.clip(pixels + rng.normal(0, 2.0, pixels.shape), 0, 255).astype(np.uint8)
        name = f"images/b{i:05d}.png"
        Image.fromarray(noisy).save(work / "batch" / name)
        rows.append({"image_id": f"b{i:05d}", "path": name, "device": src.get("device")})
    pd.DataFrame(rows).to_csv(work / "batch" / "batch.csv", index=False)
    results = []
    for cap in args.max_images:
        copy = {
            **params,
            "drift": {
                **params["drift"],
                "max_images": cap,
                "incoming": str(work / "batch" / "batch.csv"),
                "report": str(work / f"drift-{cap}.json"),
            },
        }
        params_path = project / f".bench-drift-{cap}.yaml"
        params_path.write_text(yaml.safe_dump(copy))
        try:
            start = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            subprocess.run(
                [sys.executable, "-m", "flows.cli", "drift", "--params", str(params_path)],
                cwd=project,
                check=True,
                capture_output=True,
                env={**os.environ},
            )
            wall = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        finally:
            params_path.unlink(missing_ok=True)
        report = json.loads((work / f"drift-{cap}.json").read_text())
        mmd = next(t for t in report["tests"] if t["kind"] == "embedding")
        results.append(
            {
                "batch_images": args.images,
                "max_images": cap,
                "compared": [mmd["n_reference"], mmd["n_batch"]],
                "wall_s": round(wall, 1),
                "peak_rss_mib": round(max(peak, before) / 1024, 0),
                "findings": [
                    f"{t['attribute']}:{t['kind']}:{t['value']}"
                    for t in report["tests"]
                    if t["drifted"]
                ],
            }
        )
        print(json.dumps(results[-1]))


if __name__ == "__main__":
    main()
