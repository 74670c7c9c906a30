"""Shipped examples stay in step with params.yaml and point at what exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from medunlearn.data.request import ForgetRequest

REPO = Path(__file__).resolve().parents[1]


def test_ham_example_is_params_yaml_pointed_at_ham() -> None:
    spec = importlib.util.spec_from_file_location("make", REPO / "scripts" / "make_ham_params.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    example = yaml.safe_load((REPO / "examples" / "ham.params.yaml").read_text())
    assert example == make.ham_params(params), "regenerate: python scripts/make_ham_params.py"
    for section in ("unlearn", "gates", "validation"):
        assert example[section] == params[section]
    assert example["maintain"]["sweep"] == params["maintain"]["sweep"]
    assert example["data"]["root"] != params["data"]["root"]  # never inside DVC's data/


def test_every_shipped_request_loads() -> None:
    reasons = {ForgetRequest.load(p).reason for p in (REPO / "requests").glob("*.yaml")}
    assert reasons == {
        "class_retirement",
        "consent_withdrawal",
        "device_deprecation",
        "outlier_removal",
    }
