"""Shipped examples stay in step with params.yaml and point at what exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medunlearn.benchmark import ham_example
from medunlearn.data.request import ForgetRequest

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "regenerate: python -m medunlearn.benchmark.ham_example"


def test_ham_example_is_params_yaml_pointed_at_ham() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    scenario = yaml.safe_load((REPO / "benchmarks" / "ham_device_deprecation.yaml").read_text())
    example = yaml.safe_load((REPO / "examples" / "ham.params.yaml").read_text())
    assert example == ham_example.ham_params(params, scenario), REGENERATE
    for section in ("unlearn", "gates", "validation"):
        assert example[section] == params[section]
    assert example["maintain"]["sweep"] == params["maintain"]["sweep"]
    assert example["data"]["root"] != params["data"]["root"]  # never inside DVC's data/
    # the benchmark scenario's model and recipe, not the demo's
    assert example["train"]["model_kwargs"] == scenario["model"]["kwargs"] == {"width": 0.5}
    assert example["train"]["epochs"] == scenario["recipe"]["epochs"] == 30
    assert example["registry"]["model"] == "ham-classifier" != params["registry"]["model"]


def test_ham_example_file_is_the_generator_output_byte_for_byte() -> None:
    text = (REPO / "examples" / "ham.params.yaml").read_text()
    assert text == ham_example.render(REPO), REGENERATE
    assert "\n#   python -m medunlearn.benchmark.ham_example\n" in text


def test_ham_example_write_creates_the_file_under_the_given_root(tmp_path: Path) -> None:
    (tmp_path / "benchmarks").mkdir()
    for name in ("params.yaml", "benchmarks/ham_device_deprecation.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    written = ham_example.write(tmp_path)
    assert written == tmp_path / "examples" / "ham.params.yaml"
    assert written.read_text() == (REPO / "examples" / "ham.params.yaml").read_text()
    assert sorted(p.name for p in written.parent.iterdir()) == ["ham.params.yaml"]


def test_ham_params_leaves_its_input_unchanged() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    scenario = yaml.safe_load((REPO / "benchmarks" / "ham_device_deprecation.yaml").read_text())
    before = yaml.safe_dump(params)
    out = ham_example.ham_params(params, scenario)
    assert yaml.safe_dump(params) == before
    assert out["data"]["path"] == "../shared/data/ham10000_sites/manifest.csv"
    assert out["data"]["root"] == "examples/data" and params["data"]["root"] != "examples/data"


def test_every_shipped_request_loads() -> None:
    reasons = {ForgetRequest.load(p).reason for p in (REPO / "requests").glob("*.yaml")}
    assert reasons == {
        "class_retirement",
        "consent_withdrawal",
        "device_deprecation",
        "outlier_removal",
    }


@pytest.mark.parametrize("name", ["params.yaml", "examples/ham.params.yaml"])
def test_dvc_exp_run_set_can_rewrite_the_shipped_params(tmp_path, name) -> None:
    """``dvc exp run -S unlearn.gamma=1.0`` (README) rewrites the params file with DVC's own
    writer, which broke on YAML anchors (issue 28 review). DVC's function applied to a copy:
    the result parses, holds the new value, and everything else is unchanged."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    copy.write_text((REPO / name).read_text())
    apply_overrides(str(copy), ["unlearn.gamma=1.0"])
    before = yaml.safe_load((REPO / name).read_text())
    after = yaml.safe_load(copy.read_text())
    assert after["unlearn"]["gamma"] == 1.0
    before["unlearn"]["gamma"] = 1.0
    assert after == before
