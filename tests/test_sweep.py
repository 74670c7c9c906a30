"""Sweep entries say what they run: inherit the reason's settings untouched, or name their
full settings; nothing in between, and no two names for one run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medunlearn.data.request import REASONS
from medunlearn.unlearn.sweep import SweepError, check_sweeps, revision_sweep, sweep_configs

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
UNLEARN = {
    "lr": 1e-3,
    "gamma": 0.5,
    "steps": 5,
    "by_reason": {"consent_withdrawal": {"lr": 1e-5, "gamma": 0.0, "steps": 1}},
}


def resolve(sweep, reason="consent_withdrawal", by_reason=None):
    maintain = {"sweep": sweep, "sweep_by_reason": by_reason or {}}
    return {c["name"]: c["config"] for c in sweep_configs(maintain, UNLEARN, reason)}


def test_an_entry_without_settings_inherits_the_reason_untouched() -> None:
    runs = resolve([{"method": "psg"}])
    assert runs == {"psg": {"method": "psg", "lr": 1e-5, "gamma": 0.0, "steps": 1}}
    other = resolve([{"method": "psg"}], reason="class_retirement")
    assert other["psg"]["lr"] == 1e-3 and other["psg"]["gamma"] == 0.5


def test_named_settings_never_pick_up_by_reason() -> None:
    # the observed bug: lr from the entry silently replaced the consent setting, and the
    # rest of by_reason leaked in. Now: the base section plus exactly the named settings.
    runs = resolve([{"method": "psg", "settings": {"lr": 3e-4}}])
    assert runs == {"psg[lr=0.0003]": {"method": "psg", "lr": 3e-4, "gamma": 0.5, "steps": 5}}
    shrink = resolve([{"method": "boundary_shrink", "settings": {"lr": 1e-3}}])
    assert shrink["boundary_shrink[lr=0.001]"] == {"method": "boundary_shrink", "lr": 1e-3}


def test_two_names_for_one_run_are_refused() -> None:
    # psg for consent inherits lr 1e-5, steps 1, gamma 0 == these explicit settings
    with pytest.raises(SweepError, match="same settings"):
        resolve(
            [
                {"method": "psg"},
                {
                    "name": "psg-lr1e-5",
                    "method": "psg",
                    "settings": {"lr": 1e-5, "gamma": 0.0, "steps": 1},
                },
            ]
        )
    # numbers compare as numbers: lr 1 and lr 1.0 are one run
    with pytest.raises(SweepError, match="same settings"):
        resolve(
            [
                {"name": "a", "method": "psg", "settings": {"lr": 1}},
                {"name": "b", "method": "psg", "settings": {"lr": 1.0}},
            ]
        )
    with pytest.raises(SweepError, match="duplicate name 'a'"):
        resolve([{"name": "a", "method": "psg"}, {"name": "a", "method": "scrub"}])


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"method": "psg", "lr": 1e-3}, "settings go under 'settings:'"),
        ({"method": "teleport"}, "unknown method 'teleport'"),
        ({"method": "scrub", "settings": {"learning_rate": 1}}, "learning_rate"),
        ({"method": "boundary_shrink", "settings": {"gamma": 0.1}}, "gamma"),
        # PyYAML reads 1e-5 (no dot) as text: it must not reach the optimiser
        ({"method": "psg", "settings": {"lr": "1e-5"}}, "setting 'lr' must be a number"),
        ({"method": "scrub", "settings": {"epochs": True}}, "'epochs' must be a number"),
        ({"method": "psg", "settings": {"augment": "no"}}, "'augment' must be true or false"),
    ],
)
def test_bad_entries_are_named(entry, message) -> None:
    with pytest.raises(SweepError, match=message) as info:
        resolve([entry])
    assert "maintain.sweep[0]" in str(info.value)


def test_shipped_sweeps_resolve_for_every_reason_with_distinct_runs() -> None:
    check_sweeps(PARAMS["maintain"], PARAMS["unlearn"])
    for reason in REASONS:
        configs = sweep_configs(PARAMS["maintain"], PARAMS["unlearn"], reason)
        assert len({c["name"] for c in configs}) == len(configs)


def test_a_revision_carrying_other_reasons_tries_their_runs_too() -> None:
    maintain = {
        "sweep": [{"method": "psg"}],
        "sweep_by_reason": {"device_deprecation": [{"method": "finetune"}]},
    }
    unlearn = {**UNLEARN, "by_reason": {"class_retirement": {"lr": 3e-4}}}
    configs = revision_sweep(
        maintain, unlearn, ["device_deprecation", "class_retirement", "class_retirement"]
    )
    names = [c["name"] for c in configs]
    assert names == ["psg", "finetune", "psg@class_retirement"]
    assert configs[0]["config"]["lr"] == 1e-3  # device: the section's lr
    assert configs[2]["config"] == {"method": "psg", "lr": 3e-4, "gamma": 0.5, "steps": 5}
    # a carried reason whose runs are all listed already adds nothing
    same = revision_sweep(maintain, unlearn, ["device_deprecation", "outlier_removal"])
    assert [c["name"] for c in same] == ["psg", "finetune"]


def test_a_bad_sweep_or_bound_is_refused_in_one_line_naming_the_params_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    for section, bad, message in [
        (
            "maintain",
            {"sweep": [{"method": "psg"}, {"name": "x", "method": "psg"}]},
            "same settings",
        ),
        ("gates", {"alpha": "1e-2"}, "bound 'alpha' must be a number"),
    ]:
        params = {k: dict(v) if isinstance(v, dict) else v for k, v in PARAMS.items()}
        params[section] = {**params[section], **bad}
        path = tmp_path / f"{section}.params.yaml"
        path.write_text(yaml.safe_dump(params))
        with pytest.raises(SystemExit) as info:
            main(["revise", "--params", str(path)])
        err = capsys.readouterr().err
        assert info.value.code == 1
        assert f"revise refused: settings in {path}" in err and message in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
