"""``examples/ham.params.yaml``: the shipped ``params.yaml`` pointed at the HAM10000 subset.

    python -m medunlearn.benchmark.ham_example      # from the repository root

The device-deprecation request (``requests/deprecate_device.yaml``) is written for the
HAM10000 subset in ``../shared/data``. The example runs it with the shipped unlearning,
gate, validation and sweep settings (copied from ``params.yaml``; ``tests/test_examples.py``
keeps them equal) and the model and training recipe of the benchmark scenario
``benchmarks/ham_device_deprecation.yaml``, writing to ``examples/data/ham``,
``models/ham`` and ``reports/ham`` so the demo's files are never touched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from medunlearn.atomic import write_text

SCENARIO = Path("benchmarks") / "ham_device_deprecation.yaml"
OUTPUT = Path("examples") / "ham.params.yaml"
HEADER = """\
# params.yaml for the HAM10000 device subset: unlearn, gates, validation and the sweep are
# the shipped ones. Generated from params.yaml (do not edit by hand) with:
#   python -m medunlearn.benchmark.ham_example
# Try the device request with:
#   medunlearn prepare --params examples/ham.params.yaml
#   medunlearn train   --params examples/ham.params.yaml
#   medunlearn revise  --params examples/ham.params.yaml --request requests/deprecate_device.yaml
"""


class NoAliases(yaml.SafeDumper):
    """A YAML dumper that writes repeated values out in full (no ``&id``/``*id``).

    DVC's ``dvc exp run -S`` rewrites params files and breaks on aliases.
    """

    def ignore_aliases(self, data: Any) -> bool:
        """Never alias.

        Args:
            data: a value being written.

        Returns:
            True.
        """
        return True


def ham_params(params: dict[str, Any], scenario: dict[str, Any]) -> dict[str, Any]:
    """The HAM10000 example's parameters, derived from the shipped ones.

    Args:
        params: the parsed ``params.yaml`` (not modified).
        scenario: the parsed benchmark scenario whose ``model`` (``name``, ``kwargs``) and
            ``recipe`` (``TrainConfig`` fields) the example trains with.

    Returns:
        A deep copy of ``params`` with the data, training, maintenance, registry, promotion,
        ledger and drift paths pointed at the HAM10000 subset and its own model line
        (``ham-classifier``); ``unlearn``, ``gates``, ``validation`` and ``maintain.sweep``
        are the shipped ones, unchanged.

    Raises:
        KeyError: ``params`` lacks a section the example rewrites (``data``, ``train``,
            ``maintain``, ``registry``, ``promotion``, ``ledger``, ``drift``) or
            ``scenario`` lacks ``model`` or ``recipe``.
    """
    p = copy.deepcopy(params)
    p["data"].update(
        name="ham",
        source="csv",
        path="../shared/data/ham10000_sites/manifest.csv",
        group_column="lesion_id",
        image_size=64,
        channels=3,
        root="examples/data",  # outside the DVC-tracked data/: the demo stages stay valid
        track_with_dvc=False,
    )
    p["train"].update(
        dataset="examples/data/ham",
        model=scenario["model"]["name"],
        model_kwargs=scenario["model"]["kwargs"],
        **dict(scenario["recipe"]),
        output="models/ham/deployed.pt",
        report="reports/ham/train_report.json",
        metrics="reports/ham/train_metrics.json",
        history="reports/ham/train_history.csv",
        retrain_output="models/ham/retrain.pt",
        retrain_report="reports/ham/retrain_metrics.json",
        retrain_history="reports/ham/retrain_history.csv",
    )
    p["maintain"].update(
        dataset="examples/data/ham",
        deployed="models/ham/deployed.pt",
        request="requests/deprecate_device.yaml",
        work_dir=".cache/maintain-ham",
        candidate_dir="models/ham/candidate",
        reports={
            k: v.replace("reports/", "reports/ham/") for k, v in p["maintain"]["reports"].items()
        },
    )
    p["maintain"].pop("candidate", None)
    p["maintain"].pop("onnx", None)
    p["registry"].update(model="ham-classifier")  # its own model line in the same registry
    p["promotion"].update(serving_dir="models/ham/production")
    p["ledger"].update(path="ledger/ham-requests.jsonl")  # requests of the HAM model line
    p["drift"].update(incoming="incoming/ham", report="reports/ham/drift.json")
    return p


def render(root: str | Path) -> str:
    """The text of ``examples/ham.params.yaml`` for the project at ``root``.

    Args:
        root: the repository root holding ``params.yaml`` and
            ``benchmarks/ham_device_deprecation.yaml``.

    Returns:
        :data:`HEADER` followed by :func:`ham_params` as YAML, keys in ``params.yaml``'s
        order.

    Raises:
        FileNotFoundError: either input file is missing.
        yaml.YAMLError: either input file is not valid YAML.
    """
    root = Path(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    scenario = yaml.safe_load((root / SCENARIO).read_text())
    return HEADER + yaml.dump(ham_params(params, scenario), Dumper=NoAliases, sort_keys=False)


def write(root: str | Path) -> Path:
    """Write ``examples/ham.params.yaml`` under ``root`` atomically.

    Args:
        root: the repository root (see :func:`render`).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: an input file is missing.
        OSError: the file cannot be written (the message names it).
    """
    return write_text(Path(root) / OUTPUT, render(root))


if __name__ == "__main__":
    print(f"wrote {write(Path.cwd())}")
