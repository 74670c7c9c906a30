"""The registry and ledger commands' core (medunlearn/revision/actions.py) through the
``medunlearn`` command: ``status``, ``--json`` on every command that prints a result, and a
value given to a flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from projects import git_dvc_project

from cli.main import main
from medunlearn.data.request import ForgetRequest
from medunlearn.revision.ledger import Ledger
from medunlearn.revision.registry import Registry


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC project: classifier v1.0.0 in production, v1.1.0 in staging; the ledger
    holds one pending request for the classifier and one for another model."""
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "registry": {"enabled": True, "model": "classifier", "push": False},
                "ledger": {"enabled": True, "path": "ledger/requests.jsonl"},
            }
        )
    )
    git_dvc_project(tmp_path)
    registry = Registry(tmp_path, push=False)
    for version in ("v1.0.0", "v1.1.0"):
        files = tmp_path / "models" / f".{version}"
        files.mkdir(parents=True)
        (files / "model.pt").write_bytes(version.encode())
        (files / "model.onnx").write_bytes(version.encode())
        registry.register(
            "classifier", files, {"kind": "trained", "gates": {"passed": True}}, version
        )
    registry.promote("classifier", "v1.0.0", "staging", "tester", "first")
    registry.promote("classifier", "v1.0.0", "production", "tester", "first")
    registry.promote("classifier", "v1.1.0", "staging", "tester", "review")
    path = tmp_path / "ledger" / "requests.jsonl"
    Ledger(path, model="classifier").add(
        ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]})
    )
    Ledger(path, model="retina").add(ForgetRequest("consent_withdrawal", {"patient_ids": ["P2"]}))
    return tmp_path


def run_json(capsys, *args: str) -> object:
    capsys.readouterr()
    main([*args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_status_names_stages_latest_and_only_the_models_own_pending_requests(
    project, capsys, monkeypatch
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = str(project / "params.yaml")
    state = run_json(capsys, "status", "--params", params)
    (model,) = state["models"]
    assert model["model"] == "classifier"
    assert model["stages"] == {"candidate": "v1.1.0", "staging": "v1.1.0", "production": "v1.0.0"}
    assert model["latest"] == "v1.1.0"
    mine = [
        e["id"] for e in Ledger(project / "ledger" / "requests.jsonl", model="classifier").pending()
    ]
    assert model["pending_requests"] == mine and len(mine) == 1  # not the retina request
    assert not state["registry_write_half_done"]
    assert state["serving"]["version"] == "v1.0.0"
    assert state["prefect_server"] == {"url": None, "reachable": None}
    main(["status", "--params", params])
    text = capsys.readouterr().out
    assert "classifier: candidate v1.1.0, staging v1.1.0, production v1.0.0" in text
    assert "1 pending request(s)" in text


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (
            ["promote", "classifier", "v1.1.0", "--to", "staging", "--by", "a", "--why", "ok"],
            {"model", "version", "stage", "unchanged"},
        ),
        (
            ["rollback", "classifier", "--stage", "staging", "--by", "a", "--why", "undo"],
            {"model", "stage", "from", "to"},
        ),
        (["registry", "classifier"], None),
        (["request", "list"], None),
    ],
)
def test_json_output_parses_and_carries_the_result(project, capsys, args, keys) -> None:
    out = run_json(capsys, *args, "--params", str(project / "params.yaml"))
    if keys is None:
        assert isinstance(out, list) and out
    else:
        assert keys <= set(out)


def test_a_value_after_a_flag_is_a_usage_error_naming_the_flag(project, capsys) -> None:
    """``registry --json true`` took ``true`` as a model name (issue 28): now exit 2, and
    the message says ``--json`` takes no value."""
    with pytest.raises(SystemExit) as exit_:
        main(["registry", "--json", "true", "--params", str(project / "params.yaml")])
    assert exit_.value.code == 2
    assert "--json takes no value" in capsys.readouterr().err
