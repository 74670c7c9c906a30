"""The settings schema refuses what issue 27 found accepted silently or answered with a
traceback, naming the file and the key (and the nearest valid key when one is misspelt),
and accepts every params file the project ships."""

from __future__ import annotations

import copy
import typing
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from medunlearn.config import load_params, load_section
from medunlearn.settings import Params, SettingsError, TrainSection, UnlearnSettings, check_params

REPO = Path(__file__).resolve().parents[1]
SHIPPED = yaml.safe_load((REPO / "params.yaml").read_text())


def edited(path: str, value) -> dict:
    """The shipped params with ``path`` (dots; a number is a list index) set to ``value``."""
    params = copy.deepcopy(SHIPPED)
    *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = params
    for key in keys:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    node[last] = value
    return params


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # accepted silently before (issue 27)
        ("unlearn.epochs", -2, "unlearn.epochs: input should be greater than or equal to 1"),
        ("unlearn.lr", 0, "unlearn.lr: input should be greater than 0"),
        ("maintain.sweep.0.settings", {"lr": 0}, "maintain.sweep[0].settings.lr: input"),
        (
            "unlearn.by_reason.class_retirement.lr",
            0,
            "unlearn.by_reason.class_retirement.lr: input should be greater than 0",
        ),
        ("train.epoch", 3, "train.epoch: unknown key; did you mean 'epochs'?"),
        ("unlern", {"lr": 1e-3}, "unlern: unknown section; did you mean 'unlearn'?"),
        # tracebacks before
        ("train.epochs", -1, "train.epochs: input should be greater than or equal to 1"),
        ("train.lr", "fast", "train.lr: input should be a valid number"),
        ("unlearn.eps", -0.1, "unlearn.eps: input should be greater than 0"),
        # ranges the issue names, and choices
        ("validation.max_forget_fraction", 0, "validation.max_forget_fraction: input should be"),
        ("validation.max_forget_fraction", 1.5, "less than or equal to 1"),
        ("data.val_fraction", 1.0, "data.val_fraction: input should be less than 1"),
        ("unlearn.forget_loss", "softer", "unlearn.forget_loss: input should be 'hard'"),
        ("gates.alpha", 0, "gates.alpha: input should be greater than 0"),
        # a share written as a percentage would make the gate vacuous
        ("gates.class_retirement.max_retain_drop", 3, "less than or equal to 1"),
        ("maintain.task_runner", "ray", "maintain.task_runner: input should be 'threads'"),
        ("maintain.sweep_by_reason.retirement", [], "maintain.sweep_by_reason.retirement"),
        ("train.augmentation.flipp", True, "train.augmentation.flipp: unknown key; did you"),
        # a YAML boolean is not an integer (pydantic's lax mode took true as 1)
        ("data.max_image_pixels", True, "data.max_image_pixels: input should be a valid integer"),
        ("data.max_image_pixels", 0, "data.max_image_pixels: input should be greater than or"),
        ("train.epochs", True, "train.epochs: input should be a valid integer"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(path, value, message, tmp_path) -> None:
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(edited(path, value)))
    with pytest.raises(SettingsError) as info:
        load_params(file)
    text = str(info.value)
    assert text.startswith(f"{file}: "), text
    assert message in text, text


def test_a_section_that_is_not_a_mapping_is_refused(tmp_path) -> None:
    file = tmp_path / "params.yaml"
    file.write_text("train: 3\n")
    with pytest.raises(SettingsError, match=r"train: input should be a valid dictionary"):
        load_section("train", file)


def test_several_problems_are_counted(tmp_path) -> None:
    params = edited("train.lr", 0)
    params["unlearn"]["epochs"] = 0
    with pytest.raises(SettingsError, match=r"and 1 more problem"):
        check_params(params)


@pytest.mark.parametrize("name", ["params.yaml", "examples/ham.params.yaml"])
def test_shipped_params_are_valid_and_returned_unchanged(name) -> None:
    params = yaml.safe_load((REPO / name).read_text())
    before = copy.deepcopy(params)
    assert check_params(params, name) == before  # nothing filled in: hashes unchanged


def literals(model, name: str) -> set:
    """The values a ``Literal[...] | None`` field allows."""
    args = typing.get_args(model.model_fields[name].annotation)
    return {v for arg in args for v in typing.get_args(arg)}


def test_schema_covers_every_setting_the_code_reads() -> None:
    """The schema must not refuse a setting the code accepts: every TrainConfig and
    PSGConfig field is a key, and each choice list equals the code's own."""
    from medunlearn.models.training import SELECT_METRICS, TrainConfig
    from medunlearn.unlearn import psg

    assert {f.name for f in fields(TrainConfig)} <= set(TrainSection.model_fields)
    assert {f.name for f in fields(psg.PSGConfig)} <= set(UnlearnSettings.model_fields)
    assert literals(TrainSection, "select_metric") == set(SELECT_METRICS)
    assert literals(UnlearnSettings, "noise") == set(psg.NOISES)
    assert literals(UnlearnSettings, "lam_schedule") == set(psg.SCHEDULES)
    assert literals(UnlearnSettings, "forget_loss") == set(psg.FORGET_LOSSES)
    assert literals(UnlearnSettings, "retain_loss") == set(psg.RETAIN_LOSSES)
    assert literals(UnlearnSettings, "bn_mode") == set(psg.BN_MODES)
    assert set(Params.model_fields) >= set(SHIPPED)
