"""``medunlearn audit``: offline LiRA of a registered revision against K reference retrains.

One small registry (git + DVC, no remote push) holds a trained v1.0.0 (its record keeps the
training recipe) and v1.1.0, a revision that forgot the demo's digit 3. The audited
checkpoint is a 1-epoch retrain without digit 3 (seed 9): a model that truly never saw the
forgotten rows, so its LiRA AUC must sit near 0.5, while the same model made to memorise
exactly those rows (a wrapper adding to their true-class logit) must be flagged. The audit
runs once with K = 2 and 1 epoch; the second run must train nothing.
"""

from __future__ import annotations

import hashlib
import html
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from medunlearn.data.batches import iterate_batches
from medunlearn.data.dataset import open_splits
from medunlearn.data.request import ForgetRequest, build_cohorts
from medunlearn.models import build_model
from medunlearn.models.checkpoint import CheckpointMeta, save_checkpoint
from medunlearn.models.training import TrainConfig, train_classifier
from medunlearn.revision.audit import (
    audit_statistics,
    plan_audit,
    reference_seeds,
    train_reference,
)
from medunlearn.revision.card import card_files
from medunlearn.revision.registry import Registry
from medunlearn.versioning import dataset_fingerprint

RETIRE_3 = ForgetRequest("class_retirement", {"labels": ["3"]})
RECIPE = {  # the deployed recipe v1.0.0 records; the audit overrides its epochs with 1
    "model": "allcnn",
    "model_kwargs": {"width": 0.25},
    "epochs": 8,
    "batch_size": 64,
    "lr": 0.003,
    "seed": 0,
    "augmentation": {},
}


def sh(cwd: Path, *args: str) -> None:
    if args[0] == "dvc":
        args = (sys.executable, "-m", "dvc", *args[1:])
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=300)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness, demo_dir):
    """The registry with v1.0.0 (trained) and v1.1.0 (digit 3 forgotten), params.yaml, and
    the first audit's result."""
    from flows.audit import run_audit

    repo = tmp_path_factory.mktemp("audit")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.name", "tester")
    sh(repo, "git", "config", "user.email", "tester@localhost")
    sh(repo, "dvc", "init", "-q")
    (repo / ".gitignore").write_text("/.medunlearn-registry.lock\n/src*/\n/cache/\n")
    params = {
        "train": {**RECIPE, "dataset": str(demo_dir), "epochs": 99},  # never the one used
        "maintain": {"dataset": str(demo_dir), "task_runner": "threads", "max_workers": 2},
        "gates": {},
        "registry": {"enabled": True, "model": "classifier", "push": False},
        "ledger": {"enabled": False},
        "audit": {"cache_dir": str(repo / "cache")},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "project")

    splits = open_splits(demo_dir)
    info = splits.info
    cohorts = build_cohorts(
        splits.manifest, splits.train, splits.val, splits.test, info.class_names, RETIRE_3
    )
    model = build_model("allcnn", len(info.class_names), 1, 28, seed=9, width=0.25)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=9)
    model = train_classifier(
        model, cohorts.retain_train, cohorts.retain_val, info.class_names, cfg
    ).model
    reg = Registry(repo, push=False)
    for version, record in (
        ("v1.0.0", {"kind": "trained", "requests": [], "params": {"train": RECIPE}}),
        (
            "v1.1.0",
            {
                "kind": "unlearned",
                "parent": "v1.0.0",
                "requests": [
                    {
                        "id": RETIRE_3.hash,
                        "reason": RETIRE_3.reason,
                        "selector": RETIRE_3.selector,
                        "fraction": None,
                    }
                ],
                "counts": cohorts.masks.counts,
                "data_fingerprint": dataset_fingerprint(demo_dir),
                "params": {"maintain": {"dataset": str(demo_dir)}, "gates": {}},
            },
        ),
    ):
        source = repo / f"src-{version}"
        save_checkpoint(
            source / "model.pt", model, CheckpointMeta.for_model(model, info.class_names, 28)
        )
        reg.register(
            "classifier",
            source,
            {**record, "gates": {"passed": True, "checks": []}},
            version,
            card=lambda r: card_files(r, []),
        )
    record_sha = sha(reg.record_dir("classifier", "v1.1.0") / "revision.json")
    result = run_audit(str(repo / "params.yaml"), "classifier", "v1.1.0", 2, epochs=1)
    return repo, reg, result, record_sha


def test_audit_file_card_and_commit(project, demo_dir, capsys) -> None:
    from cli.main import main

    repo, reg, result, record_sha = project
    manifest = pd.read_csv(demo_dir / "manifest.csv", dtype=str)
    digit_3 = manifest["label"] == "3"
    forgotten = int((digit_3 & (manifest["split"] == "train")).sum())
    heldout = int((digit_3 & manifest["split"].isin(["val", "test"])).sum())
    folder = reg.record_dir("classifier", "v1.1.0")
    stored = json.loads((folder / "audit.json").read_text())
    assert stored["n_references"] == 2 and stored["n_forget_train"] == forgotten == 118
    # 65 held-out 3s: members are paired 1:1 with them (the gates' matching, label-only)
    assert stored["n_members"] == stored["n_nonmembers"] == heldout == 65
    assert stored["matching"]["unmatched_members"] == forgotten - heldout
    assert stored["seeds"] == reference_seeds(0, 2) == [1, 2]  # never the deployed seed 0
    assert stored["trained_now"] == 2 and stored["from_cache"] == 0
    assert stored["epochs"] == 1 and stored["recipe_epochs"] == 8  # v1.0.0's recipe, not params
    assert stored["recipe_source"] == "classifier v1.0.0 record"
    assert stored["auc"] is not None
    assert "calibrate a weaker model" in stored["verdict"]  # the epochs override is stated
    assert stored["requests"] == [RETIRE_3.hash]
    # the record is immutable; audit and card are committed together, nothing else
    assert sha(folder / "revision.json") == record_sha
    assert result["written"] == {
        "path": "registry/classifier/v1.1.0/audit.json",
        "committed": True,
        "why_not": None,
    }
    changed = subprocess.run(
        ["git", "show", "--name-only", "--format=%s", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(p for p in changed if p.startswith("registry/")) == [
        f"registry/classifier/v1.1.0/{n}"
        for n in ("audit.json", "card.json", "card.md", "report.html")
    ]
    card = (folder / "card.md").read_text()
    assert "## Per-example audit" in card and stored["verdict"] in card
    assert "2 reference models (seeds 1, 2" in card
    assert json.loads((folder / "card.json").read_text())["audit"]["auc"] == stored["auc"]
    assert stored["verdict"] in html.unescape((folder / "report.html").read_text())
    capsys.readouterr()
    main(["card", "classifier", "v1.1.0", "--params", str(repo / "params.yaml")])
    shown = capsys.readouterr().out
    assert stored["verdict"] in shown and "65 of 118 forgotten images" in shown
    main(["card", "classifier", "v1.0.0", "--params", str(repo / "params.yaml")])
    assert "Not run. `medunlearn audit classifier v1.0.0" in capsys.readouterr().out


def test_a_second_audit_trains_nothing(project, monkeypatch, capsys) -> None:
    """Every reference comes from the bank: training is made impossible, and the JSON says
    both came from the cache under the same keys."""
    import medunlearn.models.bank as bank
    from cli.main import main

    repo, _, first, _ = project

    def no_training(*args, **kwargs):
        raise AssertionError("a reference model was retrained")

    monkeypatch.setattr(bank, "train_classifier", no_training)
    capsys.readouterr()
    main(
        ["audit", "classifier", "v1.1.0", "-k", "2", "--epochs", "1", "--json"]
        + ["--params", str(repo / "params.yaml")]
    )
    out = capsys.readouterr().out
    again = json.loads(out[out.index("{\n") :])
    assert again["from_cache"] == 2 and again["trained_now"] == 0
    assert [r["key"] for r in again["references"]] == [r["key"] for r in first["references"]]
    assert again["auc"] == pytest.approx(first["auc"], abs=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classifier", "v9.9.9"], "unknown version: model 'classifier' has no version v9.9.9"),
        (["other", "v1.1.0"], "unknown model 'other'"),
        (["classifier", "v1.0.0"], "forgot nothing"),
        (["classifier", "v1.1.0", "-k", "0"], "--reference-models must be at least 1"),
    ],
)
def test_refusals_are_one_line_and_exit_1(project, capsys, args, message) -> None:
    from cli.main import main

    repo = project[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", *args, "--params", str(repo / "params.yaml")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("audit refused: ") and message in err and "\n" not in err


class Memoriser(torch.nn.Module):
    """``base``, but certain of the true label of every image in ``rows`` (found by its
    pixels): a model that memorised exactly those rows, by construction."""

    def __init__(self, base: torch.nn.Module, rows) -> None:
        super().__init__()
        self.base = base
        self.known = {
            image.numpy().tobytes(): int(label)
            for images, labels in iterate_batches(rows, 256)
            for image, label in zip(images, labels, strict=True)
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x).clone()
        for i, image in enumerate(x):
            label = self.known.get(image.cpu().numpy().tobytes())
            if label is not None:
                out[i, label] += 20.0
        return out


def test_memorised_rows_score_far_above_the_retrain(project) -> None:
    """Independent truth: the audited model is a retrain without digit 3 (AUC near 0.5);
    the same model memorising the forgotten rows is flagged (AUC near 1, status signal)."""
    from medunlearn.revision.audit import verdict

    repo, reg, _, _ = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    plan = plan_audit(reg, "classifier", "v1.1.0", params, 2, epochs=1)
    refs = [train_reference(plan.bank, plan.retain_train, plan.retain_val, s) for s in plan.seeds]
    assert all(r.cached for r in refs)
    retrain = audit_statistics(plan.cohorts, [r.model for r in refs], plan.target)
    memorised = audit_statistics(
        plan.cohorts, [r.model for r in refs], Memoriser(plan.target, plan.cohorts.forget_train)
    )
    assert 0.35 < retrain["auc"] < 0.65, retrain
    assert memorised["auc"] > 0.95 and memorised["auc"] - retrain["auc"] > 0.3
    assert memorised["flagged"] > 5 * memorised["expected"]
    assert verdict(memorised, plan.bounds)[0] == "signal"
    assert verdict(retrain, plan.bounds)[0] == "no signal"


def test_data_that_is_not_the_revisions_is_refused_inside_the_flow(
    project, monkeypatch, capsys
) -> None:
    """A refusal raised in the flow (here: the dataset's content differs from the record's
    fingerprint) still ends in one line and exit 1, before any reference is trained."""
    import medunlearn.revision.audit as revision_audit
    from cli.main import main

    repo = project[0]
    monkeypatch.setattr(revision_audit, "dataset_fingerprint", lambda _: "not the same data")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "classifier", "v1.1.0", "-k", "2", "--params", str(repo / "params.yaml")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("audit refused: ") and "is not the data" in err[-1]
    assert not any("Traceback" in line for line in err)


def stats(**overrides) -> dict:
    base = {
        "n_references": 4,
        "n_members": 40,
        "n_nonmembers": 40,
        "auc": 0.5,
        "auc_p_value": 0.5,
        "tpr_at_5fpr": 0.05,
        "flagged": 2,
        "expected": 2.0,
        "flagged_p_value": 0.6,
        "nonmember_flagged": 2,
        "nonmember_flag_rate": 0.05,
    }
    return {**base, **overrides}


BOUNDS = {"alpha": 0.01, "mia_auc_margin": 0.05, "min_members": 10}


@pytest.mark.parametrize(
    ("overrides", "status", "phrase"),
    [
        ({}, "no signal", "Cannot show"),
        ({"n_references": 1, "auc": None}, "underpowered", "K = 1 reference model(s)"),
        ({"n_members": 8}, "underpowered", "8 members < gates.min_members 10"),
        ({"auc": 0.8, "auc_p_value": 1e-4}, "signal", "Shows: this model is more confident"),
        ({"auc": 0.53, "auc_p_value": 1e-4}, "no signal", "Cannot show"),  # not material
        ({"flagged": 20, "flagged_p_value": 1e-5}, "signal", "20 of 40 members flagged"),
        # flagged far above 5% on both sides: the references do not calibrate this model
        (
            {"flagged": 20, "nonmember_flagged": 19, "nonmember_flag_rate": 0.475},
            "no signal",
            "held-out rows are flagged at 48%, not 5%",
        ),
    ],
)
def test_the_verdict_says_what_it_can_and_cannot_show(overrides, status, phrase) -> None:
    from medunlearn.revision.audit import verdict

    got, line = verdict(stats(**overrides), BOUNDS)
    assert got == status and phrase in line


def test_recorded_requests_rebuild_identifiers_from_the_ledger(tmp_path, demo_dir) -> None:
    """A record keeps a consent request's patients as ledger tokens; the audit finds the
    same rows through the ledger's salt, in the record's order (the last one carries the
    earlier), and refuses identifiers that no ledger can resolve."""
    from medunlearn.data.request import cohort_masks
    from medunlearn.revision.audit import AuditRefused, recorded_requests
    from medunlearn.revision.ledger import Ledger, record_entry

    manifest = pd.read_csv(demo_dir / "manifest.csv", dtype=str)
    patients = sorted(manifest.loc[manifest["split"] == "train", "patient_id"].unique())[:3]
    consent = ForgetRequest("consent_withdrawal", {"patient_ids": patients})
    ledger = Ledger(tmp_path / "ledger" / "requests.jsonl")
    entries = [record_entry(ledger.add(r)) for r in (RETIRE_3, consent)]
    assert all(p not in json.dumps(entries) for p in patients)  # tokens only
    earlier, last = recorded_requests(entries, manifest, ledger)
    assert sorted(last.selector["patient_ids"]) == patients and earlier == RETIRE_3
    both = cohort_masks(manifest, ForgetRequest(last.reason, last.selector, carried=(earlier,)))
    wanted = (manifest["split"] == "train") & (
        manifest["patient_id"].isin(patients) | (manifest["label"] == "3")
    )
    assert both.counts["forget_train"] == int(wanted.sum())
    with pytest.raises(AuditRefused, match="not in the forget ledger"):
        recorded_requests([{**entries[1], "id": consent.hash}], manifest, ledger)
