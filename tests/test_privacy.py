"""Free text is refused when it names a patient or image identifier (issue 27)."""

from __future__ import annotations

import pytest

from medunlearn.data.request import ForgetRequest
from medunlearn.revision.ledger import Ledger
from medunlearn.revision.privacy import (
    IdentifierInText,
    check_free_text,
    manifest_patient_ids,
    words,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P0529 withdrew.", ["P0529", "withdrew"]),
        ("(patient-P0529)", ["patient-P0529", "patient", "P0529"]),
        ("ISIC_0024319, twice", ["ISIC_0024319", "ISIC", "0024319", "twice"]),
        ("", []),
    ],
)
def test_words(text, expected) -> None:
    assert words(text) == expected


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("P0529 asked us to stop", True),
        ("p0529 asked us to stop", True),  # any case (issue 27 review)
        ("isic_0024319 again", True),
        ("rolled back: patient-P0529.", True),
        ("image ISIC_0024319 was wrong", True),  # an image id of the ledger
        ("P05290 is another patient", False),  # not the same id
        ("rolled back after 12 hours; P-0529 is not an id here", False),
        ("", False),
        (None, False),
    ],
)
def test_ledger_ids_are_found_through_their_salted_tokens(tmp_path, text, refused) -> None:
    ledger = Ledger(tmp_path / "ledger" / "requests.jsonl")
    ledger.salt(create=True)
    ledger.add(ForgetRequest("consent_withdrawal", {"patient_ids": ["P0529"]}))
    ledger.add(ForgetRequest("outlier_removal", {"image_ids": ["ISIC_0024319"]}))
    assert "P0529" not in ledger.path.read_text()  # only tokens on disk
    if refused:
        with pytest.raises(IdentifierInText, match="^--why names") as exc:
            check_free_text({"--why": text}, ledger=ledger)
        assert "P0529" not in str(exc.value) and "ISIC" not in str(exc.value)
    else:
        check_free_text({"--why": text}, ledger=ledger)


def test_manifest_patient_ids_that_look_like_ids(tmp_path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("image_id,patient_id\na,P0001\nb,12\nc,left\nd,\ne,HAM_0003062\n")
    assert manifest_patient_ids(path) == {"P0001", "HAM_0003062"}
    assert manifest_patient_ids(tmp_path / "missing.csv") == set()
    with pytest.raises(IdentifierInText, match="--accept names"):
        check_free_text({"--why": "ok", "--accept": "HAM_0003062"}, {"P0001", "HAM_0003062"})
    check_free_text({"--why": "12 left"}, manifest_patient_ids(path))
    with pytest.raises(IdentifierInText):
        check_free_text({"--why": "see ham_0003062"}, manifest_patient_ids(path))
