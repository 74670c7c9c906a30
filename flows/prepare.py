"""Flow ``prepare``: materialise the dataset named in ``params.yaml:data`` and version it.

    python -m flows.prepare          # data/<name> from the demo, MedMNIST or a CSV manifest

Reads only the ``data`` section. Steps: materialise-dataset -> track-data (``dvc add data``,
when ``data.track_with_dvc`` is true and this is a DVC project).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow

from medunlearn.config import load_section
from medunlearn.data.manifest import ManifestError
from medunlearn.refusal import quiet_refusals
from tasks.materialise_dataset import materialise_dataset
from tasks.track_data import track_data


@flow(name="prepare", log_prints=True)
def prepare_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Build ``data/<name>``; nothing under ``data/`` changes if the source is invalid."""
    cfg = load_section("data", params_path)
    root = cfg.get("root", "data")
    info = materialise_dataset(cfg, root)
    version = track_data(root) if cfg.get("track_with_dvc", True) else None
    return {"dataset": f"{root}/{cfg['name']}", "data_version": version, **info}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="medunlearn prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    quiet_refusals()
    try:
        info = prepare_flow(args.params)
    except ManifestError as exc:  # nothing under data/ was changed
        print(f"prepare refused: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(
        f"dataset {info['dataset']} ({info['source']}): {info['counts']} images, "
        f"{len(info['class_names'])} classes, {info['channels']}x{info['image_size']}x"
        f"{info['image_size']}, data version {info['data_version']}"
    )


if __name__ == "__main__":
    main()
