"""The Great Expectations suites: each expectation fails on the bad input it names."""

from __future__ import annotations

import shutil

import pytest

from medunlearn.data.dataset import load_dataset
from medunlearn.unlearn import ForgetRequest, cohort_masks
from medunlearn.validation import (
    ValidationFailed,
    retained_classes,
    validate_cohorts,
    validate_manifest,
)


@pytest.fixture(scope="module")
def demo(demo_dir):
    info, manifest = load_dataset(demo_dir)
    return info, manifest


def failing(report) -> dict[str, str]:
    return {f"{o.expectation}:{o.column}": o.detail for o in report.failures}


def test_clean_demo_passes_both_suites(demo, demo_dir) -> None:
    info, manifest = demo
    assert validate_manifest(manifest, demo_dir, info.class_names, info.spec).success
    request = ForgetRequest("class_retirement", {"labels": ["3"]})
    report = validate_cohorts(
        manifest, cohort_masks(manifest, request), request, info.class_names, 0.3
    )
    assert report.success and len(report.outcomes) >= 6


def test_manifest_suite_names_each_problem(demo, demo_dir, tmp_path) -> None:
    info, manifest = demo
    root = tmp_path / "demo"
    shutil.copytree(demo_dir, root)
    bad = manifest.copy()
    bad.loc[3, "label"] = "cat"  # not a class of the model
    bad.loc[4, "image_id"] = bad.loc[5, "image_id"]  # duplicate id
    bad.loc[6, "split"] = "holdout"
    (root / bad.loc[7, "path"]).unlink()  # missing file
    (root / bad.loc[8, "path"]).write_bytes(b"\x89PNG broken")  # undecodable
    report = validate_manifest(bad, root, info.class_names, info.spec)
    failed = failing(report)
    assert "expect_column_values_to_be_in_set:label" in failed
    assert "expect_column_values_to_be_unique:image_id" in failed
    assert "expect_column_values_to_be_in_set:split" in failed
    assert "image file missing" in failed["expect_column_values_to_be_in_set:file_exists"]
    assert "cannot be decoded" in failed["expect_column_values_to_be_in_set:decodable"]
    with pytest.raises(ValidationFailed, match="label must be one of the model's classes"):
        report.raise_on_failure()
    examples = {o.column: o.examples for o in report.failures}
    assert examples["label"][0]["row"] == 4 and examples["label"][0]["label"] == "cat"


def test_stored_shape_is_recorded_and_decoded_shape_checked(demo, demo_dir) -> None:
    from medunlearn.validation import image_properties

    info, manifest = demo
    props = image_properties(manifest.head(3), demo_dir, info.spec)
    assert set(props["stored_shape"]) == {"1x28x28"} and set(props["shape"]) == {"1x28x28"}
    assert (props["max_intensity"] > props["min_intensity"]).all()


def test_missing_required_column_fails(demo, demo_dir) -> None:
    info, manifest = demo
    report = validate_manifest(
        manifest.drop(columns=["split"]), demo_dir, info.class_names, info.spec
    )
    assert "expect_column_to_exist:split" in failing(report)


def test_cohort_suite_consent_overlap_and_fraction(demo) -> None:
    info, manifest = demo
    train = manifest[manifest["split"] == "train"]
    patient = train["patient_id"].value_counts().index[0]
    image = train.loc[train["patient_id"] == patient, "image_id"].iloc[0]
    request = ForgetRequest("consent_withdrawal", {"image_ids": [image]})
    report = validate_cohorts(
        manifest, cohort_masks(manifest, request), request, info.class_names, 0.3
    )
    outcome = next(o for o in report.failures if o.column == "patient_in_forget_and_retain")
    assert all(str(patient) not in str(ex) for ex in outcome.examples)
    assert all(ex["patient_id"].startswith("pt-") for ex in outcome.examples)

    whole = ForgetRequest("consent_withdrawal", {"patient_ids": [patient]})
    assert validate_cohorts(
        manifest, cohort_masks(manifest, whole), whole, info.class_names, 0.3
    ).success

    big = ForgetRequest("class_retirement", {"labels": ["1", "2", "3", "4"]})
    masks = cohort_masks(manifest, big)
    assert (
        "max_forget_fraction"
        in validate_cohorts(manifest, masks, big, info.class_names, 0.3).summary()
    )
    assert validate_cohorts(
        manifest, masks, big, info.class_names, 0.3, override_fraction=True
    ).success


def test_retained_class_must_survive(demo) -> None:
    info, manifest = demo
    # a device deprecation that happens to remove every '7' from training
    request = ForgetRequest("device_deprecation", {"query": "label == '7'"})
    report = validate_cohorts(
        manifest, cohort_masks(manifest, request), request, info.class_names, 0.5
    )
    assert "a retained class has no image left in retain-train" in report.summary()
    assert retained_classes(["a", "b"], ForgetRequest("class_retirement", {"labels": ["b"]})) == [
        "a"
    ]
