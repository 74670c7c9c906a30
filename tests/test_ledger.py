"""The forget ledger: salted tokens, statuses, requests rebuilt from tokens, carried cohorts.

The manifests here are hand-written, so the right cohort of every request is known.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medunlearn.data.request import ForgetRequest, RequestError, cohort_masks
from medunlearn.revision.ledger import Ledger, LedgerError

MANIFEST = pd.DataFrame(
    {
        "image_id": [f"img{i}" for i in range(10)],
        "patient_id": ["P1", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9"],
        "label": ["0", "0", "1", "1", "0", "1", "0", "1", "0", "1"],
        "split": ["train"] * 6 + ["val", "val", "test", "test"],
    }
)


def test_identifiers_are_salted_tokens_and_never_stored(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger" / "requests.jsonl")
    request = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1", "P3"]}, note="P1 asked")
    entry = ledger.add(request, received_at="2026-11-29T10:00:00+00:00")
    text = ledger.path.read_text()
    assert "P1" not in text and "P3" not in text  # neither the ids nor the free-text note
    salt = ledger.salt_path.read_text().strip().encode()
    expected = sorted(
        "h-" + hmac.new(salt, p.encode(), hashlib.sha256).hexdigest()[:16] for p in ("P1", "P3")
    )
    assert entry["selector"]["patient_ids"] == expected
    assert entry["status"] == "pending" and entry["received_at"].startswith("2026-11-29")
    assert "/salt" in (ledger.path.parent / ".gitignore").read_text().splitlines()
    # the same request twice is one entry; a plain (unsalted) hash of an id is not a token
    assert ledger.add(request)["id"] == entry["id"] and len(ledger.entries()) == 1
    assert hashlib.sha256(b"P1").hexdigest()[:16] not in text


def test_two_projects_have_different_tokens(tmp_path: Path) -> None:
    request = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]})
    a = Ledger(tmp_path / "a" / "requests.jsonl").add(request)
    b = Ledger(tmp_path / "b" / "requests.jsonl").add(request)
    assert a["selector"] != b["selector"] and a["id"] != b["id"]


def test_a_request_rebuilt_from_tokens_selects_the_same_rows(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "requests.jsonl")
    raw = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1", "P3"]})
    rebuilt = ledger.request(ledger.add(raw), MANIFEST)
    assert rebuilt.selector == {"patient_ids": ["P1", "P3"]}
    masks = cohort_masks(MANIFEST, rebuilt)
    assert masks.forget_train.tolist() == [True, True, False, True] + [False] * 6


def test_a_request_naming_an_unknown_patient_is_refused_whole(tmp_path: Path) -> None:
    # P1 exists, "P99" does not: forgetting P1 alone would half-apply the request.
    raw = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1", "P99"]})
    with pytest.raises(RequestError, match=r"1 of 2 ids match no 'patient_id'.*positions \[1\]"):
        cohort_masks(MANIFEST, raw)
    ledger = Ledger(tmp_path / "requests.jsonl")
    entry = ledger.add(raw)
    with pytest.raises(RequestError, match="1 of its 2 patient_ids are not in this manifest"):
        ledger.request(entry, MANIFEST)
    # once applied, a carried request keeps the patients still in the data (P99 left it)
    ledger.set_status([entry["id"]], "applied in v1.1.0")
    [(_, carried)] = ledger.carried(MANIFEST)
    assert carried.selector == {"patient_ids": ["P1"]}


def test_statuses_and_errors(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "requests.jsonl")
    first = ledger.add(ForgetRequest("class_retirement", {"labels": ["1"]}))
    second = ledger.add(ForgetRequest("consent_withdrawal", {"patient_ids": ["P2"]}))
    ledger.set_status([first["id"]], "applied in v1.1.0")
    assert [e["id"] for e in ledger.applied()] == [first["id"]]
    assert [e["id"] for e in ledger.pending()] == [second["id"]]
    with pytest.raises(LedgerError, match="unknown request id"):
        ledger.set_status(["req-nope"], "applied in v1.2.0")
    with pytest.raises(LedgerError, match="status must be"):
        ledger.set_status([second["id"]], "done")
    lines = [json.loads(line) for line in ledger.path.read_text().splitlines()]
    assert [e["status"] for e in lines] == ["applied in v1.1.0", "pending"]
    ledger.salt_path.unlink()
    with pytest.raises(LedgerError, match="salt is missing"):
        ledger.request(second, MANIFEST)


def test_carried_requests_stay_forgotten_and_are_never_retained() -> None:
    """Earlier consent (P1) carried into a class-1 retirement: forget-train is the union,
    retain-train excludes both, and held-out rows of the retired class are not retention."""
    earlier = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]})
    new = ForgetRequest("class_retirement", {"labels": ["1"]}, carried=(earlier,))
    masks = cohort_masks(MANIFEST, new)
    #            img0  img1  img2  img3  img4   img5  img6   img7   img8   img9
    union = [True, True, True, True, False, True, False, False, False, False]
    assert masks.forget_train.tolist() == union
    assert masks.retain_train.tolist() == [not u and i < 6 for i, u in enumerate(union)]
    assert masks.forget_test.tolist() == [False] * 9 + [True]
    assert np.flatnonzero(masks.retain_test).tolist() == [8]
    assert new.hash != ForgetRequest("class_retirement", {"labels": ["1"]}).hash


def test_a_class_retired_earlier_is_not_expected_in_retain_train() -> None:
    from medunlearn.data.expectations import retained_classes

    earlier = ForgetRequest("class_retirement", {"labels": ["2"]})
    new = ForgetRequest("class_retirement", {"labels": ["1"]}, carried=(earlier,))
    assert retained_classes(["0", "1", "2", "3"], new) == ["0", "3"]
    consent = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]}, carried=(earlier,))
    assert retained_classes(["0", "1", "2", "3"], consent) == ["0", "1", "3"]


def test_a_request_file_may_list_the_requests_it_carries() -> None:
    """What ``medunlearn reproduce`` writes: the carried requests select the same rows as the
    ledger's rebuilt ones (the hand-checked union of the carried-cohort test)."""
    obj = {
        "reason": "class_retirement",
        "selector": {"labels": ["1"]},
        "carried": [{"reason": "consent_withdrawal", "selector": {"patient_ids": ["P1"]}}],
    }
    request = ForgetRequest.from_dict(obj)
    assert request.carried[0].selector == {"patient_ids": ["P1"]}
    union = [True, True, True, True, False, True, False, False, False, False]
    assert cohort_masks(MANIFEST, request).forget_train.tolist() == union
    with pytest.raises(Exception, match=r"carried\[0\]"):
        ForgetRequest.from_dict({**obj, "carried": [{"reason": "tidying", "selector": {}}]})


def test_consent_after_a_carried_class_retirement_validates() -> None:
    """P1 has a class-1 image (retired earlier, carried) and a class-0 image (retained): P1
    did not withdraw, so only the new consent patient P4 must be wholly forgotten."""
    from medunlearn.data.expectations import validate_cohorts

    manifest = MANIFEST.copy()
    manifest.loc[0, "label"] = "1"  # P1: img0 class 1, img1 class 0
    retired = ForgetRequest("class_retirement", {"labels": ["1"]})
    consent = ForgetRequest("consent_withdrawal", {"patient_ids": ["P4"]}, carried=(retired,))
    masks = cohort_masks(manifest, consent)
    assert masks.forget_train[0] and masks.retain_train[1]  # P1 spans both, legitimately
    report = validate_cohorts(manifest, masks, consent, ["0", "1"], 0.9)
    assert report.success, report.summary()
    # the same patient as a withdrawal of their own is refused while an image is retained
    withdrawn = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]}, carried=(retired,))
    bad = cohort_masks(manifest, withdrawn)
    bad.retain_train[1], bad.forget_train[1] = True, False  # P1's class-0 image kept
    assert not validate_cohorts(manifest, bad, withdrawn, ["0", "1"], 0.9).success


def test_a_rejected_request_can_be_resubmitted_and_a_lost_salt_is_never_replaced(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "requests.jsonl")
    request = ForgetRequest("class_retirement", {"labels": ["1"]})
    entry = ledger.add(request)
    ledger.set_status([entry["id"]], "rejected: no candidate passed the gates")
    again = ledger.add(request)
    assert again["id"] == entry["id"] and again["status"] == "pending"
    assert again["history"] == ["rejected: no candidate passed the gates"]
    # a failed run (a crash) is retried only when asked: not pending, resubmission reopens it
    ledger.set_status([entry["id"]], "failed: unlearn (RuntimeError)")
    assert ledger.pending() == []
    reopened = ledger.add(request)
    assert reopened["status"] == "pending"
    assert reopened["history"][-1] == "failed: unlearn (RuntimeError)"
    with pytest.raises(LedgerError, match="status must be"):
        ledger.set_status([entry["id"]], "crashed")
    # the salt is DVC-tracked but not pulled: adding must refuse, not mint a new salt
    (tmp_path / "salt.dvc").write_text("outs: []\n")
    ledger.salt_path.unlink()
    with pytest.raises(LedgerError, match="dvc pull"):
        ledger.add(ForgetRequest("consent_withdrawal", {"patient_ids": ["P2"]}))
    assert not ledger.salt_path.exists()


def test_request_hashes_are_salted_once_the_project_has_a_salt() -> None:
    """Reports and ONNX metadata carry the request hash. Unsalted, trying every id of the
    form P0000-P9999 finds the withdrawn patient; salted, the same search does not."""
    from medunlearn.data import manifest

    request = ForgetRequest("consent_withdrawal", {"patient_ids": ["P0529"]})
    guesses = {
        ForgetRequest("consent_withdrawal", {"patient_ids": [f"P{i:04d}"]}).hash: i
        for i in range(10000)
    }
    assert guesses[request.hash] == 529  # why a salt is needed
    manifest.set_identifier_salt(b"project secret")
    try:
        salted = request.hash
    finally:
        manifest.set_identifier_salt(None)
    assert salted not in guesses
    assert request.hash in guesses  # unsalted again: the hash is a pure function of the salt


def test_a_request_is_judged_on_its_own_rows_inside_a_larger_revision(demo_splits) -> None:
    """Consent of two patients carried with the retired digit 3: unlearning forgets both, but
    the consent's evidence is its own 8 images, and retention leaves out every forgotten row."""
    from medunlearn.data.request import build_cohorts
    from medunlearn.revision.candidates import request_cohorts

    data = demo_splits
    retired = ForgetRequest("class_retirement", {"labels": ["3"]})
    consent = ForgetRequest(
        "consent_withdrawal", {"patient_ids": ["P0529", "P0109"]}, carried=(retired,)
    )
    names = data.info.class_names
    union = build_cohorts(data.manifest, data.train, data.val, data.test, names, consent)
    own = request_cohorts(union, consent)
    m = data.manifest
    train = m["split"] == "train"
    patients = m["patient_id"].isin(["P0529", "P0109"])
    assert len(own.forget_train) == int((train & patients).sum()) == 8
    assert len(union.forget_train) == int((train & (patients | (m["label"] == "3"))).sum())
    assert len(own.retain_train) == len(union.retain_train)
    assert len(own.retain_train) == int((train & ~patients & (m["label"] != "3")).sum())
    assert own.request.reason == "consent_withdrawal" and not own.request.carried


def test_a_reviewer_rejects_what_production_never_served(tmp_path: Path, capsys) -> None:
    """``medunlearn request reject``: a request applied only in a candidate (a drift
    request nobody promoted) or still pending ends rejected, committed, and is no longer
    carried; one applied in a version that served in production stays applied."""
    import subprocess

    import yaml
    from projects import git_dvc_project

    from cli.main import main
    from medunlearn.revision.registry import Registry

    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "registry": {"enabled": True, "model": "classifier"},
                "ledger": {"enabled": True, "path": "ledger/requests.jsonl"},
            }
        )
    )
    git_dvc_project(tmp_path)
    ledger = Ledger(tmp_path / "ledger" / "requests.jsonl")
    served, candidate_only, pending = (
        ledger.add(ForgetRequest("consent_withdrawal", {"patient_ids": [p]}))["id"]
        for p in ("P1", "P2", "P3")
    )
    registry = Registry(tmp_path)
    for version, ids in (("v1.0.0", [served]), ("v1.1.0", [served, candidate_only])):
        files = tmp_path / "models" / f".{version}"
        files.mkdir(parents=True)
        (files / "weights.bin").write_bytes(version.encode())
        (files / "model.onnx").write_bytes(version.encode())
        record = {
            "kind": "unlearned",
            "gates": {"passed": True},
            "requests": [{"id": i} for i in ids],
        }
        registry.register("classifier", files, record, version)
    registry.promote("classifier", "v1.0.0", "staging", "tester", "first")
    registry.promote("classifier", "v1.0.0", "production", "tester", "first")
    ledger.set_status([served], "applied in v1.0.0")
    ledger.set_status([candidate_only], "applied in v1.1.0")
    params = str(tmp_path / "params.yaml")

    def reject(request_id: str, by: str = "reviewer", why: str = "device still in use") -> None:
        main(["request", "reject", request_id, "--by", by, "--why", why, "--params", params])

    def refused(request_id: str, message: str, **kw: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            reject(request_id, **kw)
        assert exit_.value.code == 1  # refused (2 is a usage error)
        err = capsys.readouterr().err
        assert message in err and err.startswith("request reject refused: ")
        assert len(err.strip().splitlines()) == 1
        return err

    refused(served, "served in production")  # production served v1.0.0 without these rows
    ledger.set_status([served], "pending")  # resubmitted: the served version still carries it
    refused(served, "served in production")
    ledger.set_status([served], "applied in v1.0.0")
    refused(pending, "why (--why)", why=" ")  # a rejection says why
    refused("req-nope", "no request")
    # a reason naming a patient of the ledger is refused (it would go into git): exit 1,
    # the option named, the id never echoed, nothing changed
    for why in ("P3 asked us to stop", "rolled back for patient-P3.", "see P1"):
        said = refused(pending, "refused: --why names a patient", why=why)
        assert "P3" not in said and "P1" not in said
    assert next(e for e in ledger.entries() if e["id"] == pending)["status"] == "pending"
    rollback = ["rollback", "classifier", "--stage", "production", "--by", "b", "--why", "undo"]
    with pytest.raises(SystemExit) as named:
        main([*rollback, "--allow-regression", "P1 is fine", "--params", params])
    said = capsys.readouterr().err
    assert named.value.code == 1 and "rollback refused: --allow-regression names" in said
    assert "P1" not in said
    reject(candidate_only)
    reject(pending)
    refused(pending, "already rejected")
    with pytest.raises(SystemExit) as promotion:  # a revision carrying a rejected request
        main(
            ["promote", "classifier", "v1.1.0", "--to", "staging", "--by", "b", "--why", "ship it"]
            + ["--params", params]
        )
    assert promotion.value.code == 1
    assert f"carries request(s) {candidate_only}, rejected" in capsys.readouterr().err
    status = {e["id"]: e["status"] for e in ledger.entries()}
    assert status == {
        served: "applied in v1.0.0",
        candidate_only: "rejected: by reviewer: device still in use",
        pending: "rejected: by reviewer: device still in use",
    }
    assert [e["id"] for e in ledger.applied()] == [served]  # the only one carried now
    git = subprocess.run(
        ["git", "status", "--porcelain", "--", "ledger/requests.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert git.stdout == ""  # the rejections are committed


# --- issue 26: a revision unlearns only what its starting model has not forgotten ---------

CONSENT_P1 = ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]})
RETIRE_1 = ForgetRequest("class_retirement", {"labels": ["1"]})
CONSENT_P3 = ForgetRequest("consent_withdrawal", {"patient_ids": ["P3"]})


def rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


# Expected rows read off MANIFEST by hand: train img0-5 (P1 = img0, img1; class 1 = img2,
# img3, img5; P3 = img3), val img6-7, test img8-9 (class 1 = img7, img9).
@pytest.mark.parametrize(
    ("new", "carried", "inherited", "forget", "retain", "retain_test", "kept_out"),
    [
        # nothing earlier: P1 is retained
        (RETIRE_1, (), (), [2, 3, 5], [0, 1, 4], [8], None),
        # P1 not forgotten by the starting model: forgotten again (the union)
        (RETIRE_1, (CONSENT_P1,), (), [0, 1, 2, 3, 5], [4], [8], None),
        # P1 already forgotten by the starting model: in neither cohort
        (RETIRE_1, (), (CONSENT_P1,), [2, 3, 5], [4], [8], 2),
        # class 1 retired earlier; the new consent's P3 image is class 1: it is the new
        # request's row (forgotten), the other class-1 rows are in neither cohort
        (CONSENT_P3, (), (RETIRE_1,), [3], [0, 1, 4], [8], 2),
        # both kinds at once: only the carried one joins forget-train
        (CONSENT_P3, (CONSENT_P1,), (RETIRE_1,), [0, 1, 3], [4], [8], 2),
    ],
    ids=["alone", "carried", "inherited", "inherited-overlap", "both"],
)
def test_inherited_requests_are_neither_forgotten_again_nor_retained(
    new, carried, inherited, forget, retain, retain_test, kept_out
) -> None:
    from dataclasses import replace

    request = replace(new, carried=carried, inherited=inherited)
    masks = cohort_masks(MANIFEST, request)
    assert rows(masks.forget_train) == forget
    assert rows(masks.retain_train) == retain
    assert rows(masks.retain_test) == retain_test
    assert not (masks.forget_train & masks.retain_train).any()
    assert masks.counts.get("inherited_train") == kept_out
    if kept_out is not None:  # train rows in no cohort = the kept-out count
        in_none = (MANIFEST["split"] == "train").to_numpy() & ~(
            masks.forget_train | masks.retain_train
        )
        assert int(in_none.sum()) == kept_out


def test_what_is_kept_out_changes_the_request_hash_and_nothing_else_does() -> None:
    """The run cache key holds the request hash: leaving rows out of retain changes the run,
    so it must change the hash; a request with nothing earlier hashes as before the field
    existed (the formula written out here), so old records and caches keep their keys."""
    import hashlib
    import json
    from dataclasses import replace

    plain = json.dumps(
        {
            "reason": "class_retirement",
            "selector": {"labels": ["1"]},
            "fraction": None,
            "seed": 0,
            "note": "",
            "carried": [],
        },
        sort_keys=True,
    )
    assert RETIRE_1.hash == hashlib.sha256(plain.encode()).hexdigest()[:16]
    variants = [
        RETIRE_1,
        replace(RETIRE_1, carried=(CONSENT_P1,)),
        replace(RETIRE_1, inherited=(CONSENT_P1,)),
        replace(RETIRE_1, inherited=(CONSENT_P3,)),
        replace(RETIRE_1, carried=(CONSENT_P3,), inherited=(CONSENT_P1,)),
    ]
    assert len({v.hash for v in variants}) == len(variants)


def test_a_request_file_may_list_inherited_requests() -> None:
    """What ``medunlearn reproduce`` writes for a revision whose parent forgot P1."""
    obj = {
        "reason": "class_retirement",
        "selector": {"labels": ["1"]},
        "inherited": [{"reason": "consent_withdrawal", "selector": {"patient_ids": ["P1"]}}],
    }
    request = ForgetRequest.from_dict(obj)
    assert request.inherited == (CONSENT_P1,) and request.carried == ()
    assert rows(cohort_masks(MANIFEST, request).retain_train) == [4]
    with pytest.raises(RequestError, match=r"inherited\[0\]"):
        ForgetRequest.from_dict({**obj, "inherited": [{"reason": "tidying", "selector": {}}]})
    with pytest.raises(RequestError, match="inherited must be a list"):
        ForgetRequest.from_dict({**obj, "inherited": "P1"})


@pytest.mark.parametrize(
    ("parent_record", "inherited", "again"),
    [
        (None, [], ["a", "b", "c"]),  # maintain.deployed fallback: nothing forgotten yet
        ({"kind": "trained", "requests": []}, [], ["a", "b", "c"]),
        ({"kind": "trained"}, [], ["a", "b", "c"]),  # a record without the key
        ({"requests": [{"id": "a"}, {"id": "c"}]}, ["a", "c"], ["b"]),
        ({"requests": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}, ["a", "b", "c"], []),
        # a request outside the ledger is recorded by its hash: it never matches an id
        ({"requests": [{"id": "0123456789abcdef"}]}, [], ["a", "b", "c"]),
    ],
)
def test_split_carried_follows_the_parent_record(parent_record, inherited, again) -> None:
    from medunlearn.revision.ledger import split_carried

    applied = [("a", CONSENT_P1), ("b", RETIRE_1), ("c", CONSENT_P3)]
    got_inherited, got_again = split_carried(applied, parent_record)
    assert [i for i, _ in got_inherited] == inherited
    assert [i for i, _ in got_again] == again
    assert {i for i, _ in got_inherited + got_again} == {"a", "b", "c"}


def test_an_inherited_retirement_or_consent_still_validates() -> None:
    """Inherited requests count as kept forgotten for the cohort suite: a class retired
    earlier is not expected in retain-train, and an earlier consent patient (in no cohort)
    is not a withdrawing patient left in retain-train."""
    from dataclasses import replace

    from medunlearn.data.expectations import retained_classes, validate_cohorts

    consent = replace(CONSENT_P3, inherited=(RETIRE_1,))
    assert retained_classes(["0", "1"], consent) == ["0"]
    masks = cohort_masks(MANIFEST, consent)
    report = validate_cohorts(MANIFEST, masks, consent, ["0", "1"], 0.9)
    assert report.success, report.summary()
    earlier = replace(RETIRE_1, inherited=(CONSENT_P1,))
    masks = cohort_masks(MANIFEST, earlier)
    assert validate_cohorts(MANIFEST, masks, earlier, ["0", "1"], 0.9).success
    # the same retirement with P1's image put back into retain-train: refused
    bad = cohort_masks(MANIFEST, earlier)
    bad.retain_train[0] = True
    report = validate_cohorts(MANIFEST, bad, earlier, ["0", "1"], 0.9)
    assert not report.success
    assert "a withdrawing patient still has images in retain-train" in report.summary()


@pytest.mark.parametrize(
    ("record", "carried", "inherited"),
    [
        # a record from before issue 26: every earlier request was forgotten again
        ({"requests": [{"id": "a"}, {"id": "b"}, {"id": "new"}]}, ["a", "b"], None),
        (
            {"requests": [{"id": "a"}, {"id": "b"}, {"id": "new"}], "inherited": ["a"]},
            ["b"],
            ["a"],
        ),
        (
            {"requests": [{"id": "a"}, {"id": "b"}, {"id": "new"}], "inherited": ["a", "b"]},
            None,
            ["a", "b"],
        ),
        ({"requests": [{"id": "new"}], "inherited": []}, None, None),
    ],
)
def test_reproduce_lists_earlier_requests_as_the_revision_used_them(
    record, carried, inherited
) -> None:
    from medunlearn.revision.reproduce import request_file

    request = request_file(record, lambda e: {"id": e["id"]})
    assert request["id"] == "new"
    assert [e["id"] for e in request.get("carried", [])] == (carried or [])
    assert [e["id"] for e in request.get("inherited", [])] == (inherited or [])
    assert ("carried" in request) is (carried is not None)
    assert ("inherited" in request) is (inherited is not None)


def test_reproduce_refuses_a_record_without_a_request() -> None:
    from medunlearn.revision.registry import RegistryError
    from medunlearn.revision.reproduce import request_file

    with pytest.raises(RegistryError, match="records no request"):
        request_file({"kind": "unlearned", "requests": []}, lambda e: e)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"devices": ["scanner_z"]}, "selects no training rows"),  # no such device
        ({"query": "image_id == image_id"}, "above validation.max_forget_fraction 0.3"),
        ({"patient_ids": ["P0109"]}, None),  # a consent withdrawal the data can serve
    ],
)
def test_request_add_applies_the_checks_revise_applies(
    tmp_path: Path, demo_dir, capsys, selector, message
) -> None:
    """``medunlearn request add`` refuses (exit 1, the file named) a selector that matches
    no training row or every one, as ``revise --request`` does, before it enters the
    ledger; a good request is appended as pending (issue 27)."""
    import yaml

    from cli.main import main

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "ledger": {"enabled": True, "path": "ledger/requests.jsonl"},
                "maintain": {"dataset": str(demo_dir)},
                "validation": {"max_forget_fraction": 0.3},
            }
        )
    )
    file = tmp_path / "request.yaml"
    file.write_text(yaml.safe_dump({"reason": "consent_withdrawal", "selector": selector}))
    ledger = Ledger(tmp_path / "ledger" / "requests.jsonl")
    if message is None:
        main(["request", "add", str(file), "--params", str(params)])
        assert [e["status"] for e in ledger.entries()] == ["pending"]
        return
    with pytest.raises(SystemExit) as info:
        main(["request", "add", str(file), "--params", str(params)])
    assert info.value.code == 1  # refused input
    err = capsys.readouterr().err
    assert f"request add refused: {file}: " in err and message in err, err
    assert ledger.entries() == []


def test_request_add_uses_validations_default_fraction(tmp_path: Path, demo_dir, capsys) -> None:
    """Without ``validation.max_forget_fraction`` in the file, ``request add`` uses the same
    default (0.3) as revise's validation: a request for every row is still refused."""
    import yaml

    from cli.main import main

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "ledger": {"enabled": True, "path": "ledger/requests.jsonl"},
                "maintain": {"dataset": str(demo_dir)},
            }
        )
    )
    file = tmp_path / "request.yaml"
    everything = {"reason": "consent_withdrawal", "selector": {"query": "image_id == image_id"}}
    file.write_text(yaml.safe_dump(everything))
    with pytest.raises(SystemExit):
        main(["request", "add", str(file), "--params", str(params)])
    assert "above validation.max_forget_fraction 0.3" in capsys.readouterr().err


def test_each_model_sees_only_its_own_requests(tmp_path: Path) -> None:
    """Issue 27 review: a second model in the project (RetinaMNIST beside the demo) was
    revised with the demo's retired digits. One ledger file, entries scoped by
    ``registry.model``; an entry written before entries named a model concerns every model."""
    from medunlearn.revision.ledger import active_ledger

    path = tmp_path / "ledger" / "requests.jsonl"
    legacy = Ledger(path).add(ForgetRequest("consent_withdrawal", {"patient_ids": ["P1"]}))
    params = {"ledger": {"enabled": True}, "registry": {"model": "classifier"}}
    classifier = active_ledger(params, tmp_path)
    retina = active_ledger({**params, "registry": {"model": "retina"}}, tmp_path)
    assert (classifier.model, retina.model) == ("classifier", "retina")
    retire = ForgetRequest("class_retirement", {"labels": ["3"]})
    mine = classifier.add(retire)
    theirs = retina.add(retire)
    assert mine["id"] != theirs["id"] and (mine["model"], theirs["model"]) == (
        "classifier",
        "retina",
    )
    assert [e["id"] for e in classifier.pending()] == [legacy["id"], mine["id"]]
    assert [e["id"] for e in retina.pending()] == [legacy["id"], theirs["id"]]
    classifier.set_status([mine["id"]], "applied in v1.1.0")
    assert [e["id"] for e in classifier.applied()] == [mine["id"]]
    assert retina.applied() == []
    assert classifier.find(retire)["id"] == mine["id"]
    assert len(Ledger(path).entries()) == 3  # one file, every model's entries
