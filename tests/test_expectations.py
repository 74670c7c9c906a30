"""The Great Expectations suites: each expectation fails on the bad input it names."""

from __future__ import annotations

import shutil

import pytest

from medunlearn.data.dataset import load_dataset
from medunlearn.data.expectations import (
    ValidationFailed,
    retained_classes,
    validate_cohorts,
    validate_manifest,
)
from medunlearn.data.request import ForgetRequest, cohort_masks


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
    from medunlearn.data.expectations import image_properties

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
    # the lost class is named alone (issue 27: every class was listed)
    assert "retained class(es) ['7'] would have no image left in retain-train" in report.summary()
    assert "earlier request" not in report.summary()
    assert "'8'" not in report.summary()  # the classes that stay are not listed
    # an earlier request kept forgotten is said to be part of it
    with_earlier = ForgetRequest(  # some '8' rows; an earlier request took every '7'
        "consent_withdrawal",
        {"labels": ["8"]},
        fraction=0.3,
        carried=(ForgetRequest("device_deprecation", {"query": "label == '7'"}),),
    )
    summary = validate_cohorts(
        manifest, cohort_masks(manifest, with_earlier), with_earlier, info.class_names, 0.5
    ).summary()
    assert "retained class(es) ['7'] would have no image left" in summary
    assert "with the rows of 1 earlier request(s) kept forgotten" in summary
    assert retained_classes(["a", "b"], ForgetRequest("class_retirement", {"labels": ["b"]})) == [
        "a"
    ]


# ------------------------------------------------- silent decoding problems and bad cells


def radiograph(inverted: bool = False, seed: int = 0):
    """A 16x16 'radiograph': dark background border, bright noisy centre (uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = np.full((16, 16), 20, dtype=np.uint8)
    image[3:13, 3:13] = rng.integers(150, 230, (10, 10))
    return 255 - image if inverted else image


def write_export(root, images, devices=None):
    """PNG files plus a manifest frame (splits cycle; one patient per image)."""
    import pandas as pd
    from PIL import Image

    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / "img" / f"{i}.png")
        rows.append(
            {
                "image_id": f"im{i}",
                "path": f"img/{i}.png",
                "label": "ab"[i % 2],
                "split": ("train", "val", "test")[i % 3],
                "patient_id": f"MRN{i}",
                "device": (devices or ["x"] * len(images))[i],
            }
        )
    return pd.DataFrame(rows)


def test_unscaled_12bit_export_is_flagged_by_its_dynamic_range(tmp_path) -> None:
    """12-bit values in a 16-bit PNG decode to [0, 4095/65535]: the row is named."""
    import numpy as np

    from medunlearn.data.images import ImageSpec

    images = [radiograph(seed=i) for i in range(6)]
    images[4] = radiograph(seed=4).astype(np.uint16) * 16  # 0..4095 in a 16-bit file
    frame = write_export(tmp_path, images)
    report = validate_manifest(frame, tmp_path, ["a", "b"], ImageSpec(16, 1))
    outcome = next(o for o in report.failures if o.column == "dynamic_range")
    assert [e["row"] for e in outcome.examples] == [5]
    assert outcome.examples[0]["dynamic_range"] < 4096 / 65535
    assert "12-bit data in a 16-bit file" in outcome.detail
    images[4] = radiograph(seed=4)  # the same image exported at 8 bits passes
    frame = write_export(tmp_path / "ok", images)
    assert validate_manifest(frame, tmp_path / "ok", ["a", "b"], ImageSpec(16, 1)).success


def test_a_device_with_inverted_polarity_is_flagged(tmp_path) -> None:
    """Device 'cr' exported its radiographs inverted: its median border and mean intensity
    differ from the others' by far more than the bound; every row of it is named."""
    from medunlearn.data.images import ImageSpec

    devices = ["dx"] * 8 + ["cr"] * 4
    images = [radiograph(inverted=d == "cr", seed=i) for i, d in enumerate(devices)]
    frame = write_export(tmp_path, images, devices)
    report = validate_manifest(frame, tmp_path, ["a", "b"], ImageSpec(16, 1))
    outcome = next(o for o in report.failures if o.column == "intensity_shift")
    assert sorted(e["row"] for e in outcome.examples) == [9, 10, 11, 12]
    assert {e["device"] for e in outcome.examples} == {"cr"}
    same = write_export(tmp_path / "ok", [radiograph(seed=i) for i in range(12)], devices)
    assert validate_manifest(same, tmp_path / "ok", ["a", "b"], ImageSpec(16, 1)).success


def test_a_colour_file_among_grey_ones_is_flagged(tmp_path) -> None:
    import numpy as np

    from medunlearn.data.images import ImageSpec

    images = [radiograph(seed=i) for i in range(6)]
    images[2] = np.stack([radiograph(seed=2)] * 3, -1)  # stored as RGB
    frame = write_export(tmp_path, images)
    report = validate_manifest(frame, tmp_path, ["a", "b"], ImageSpec(16, 1))
    outcome = next(o for o in report.failures if o.column == "channels_consistent")
    assert [e["row"] for e in outcome.examples] == [3]
    images[2] = radiograph(seed=2)  # stored grey like the others: passes
    frame = write_export(tmp_path / "ok", images)
    assert validate_manifest(frame, tmp_path / "ok", ["a", "b"], ImageSpec(16, 1)).success


def test_report_survives_empty_cells_and_names_every_duplicate(tmp_path) -> None:
    """An empty label used to crash the JSON report (NAType); a duplicated image_id showed
    the first occurrence's row twice."""
    import json

    import pandas as pd

    from medunlearn.data.images import ImageSpec

    frame = write_export(tmp_path, [radiograph(seed=i) for i in range(6)])
    frame.loc[2, "label"] = pd.NA
    frame.loc[3, "path"] = pd.NA  # an empty path cell used to crash (PosixPath / float)
    frame.loc[4, "image_id"] = "im1"
    report = validate_manifest(frame, tmp_path, ["a", "b"], ImageSpec(16, 1))
    written = json.loads(json.dumps(report.to_dict()))  # what validate_data writes
    failures = {o["column"]: o for o in written["outcomes"] if not o["success"]}
    assert failures["label"]["examples"] == [
        {"image_id": "im2", "row": 3, "label": None, "patient_id": hash_id("MRN2"), "device": "x"}
    ]
    assert [e["row"] for e in failures["image_id"]["examples"]] == [2, 5]
    assert [e["row"] for e in failures["path"]["examples"]] == [4]
    assert "MRN2" not in json.dumps(written)  # patient ids only hashed


def hash_id(value: str) -> str:
    from medunlearn.data.manifest import hash_identifier

    return hash_identifier(value)


def test_a_passed_manifest_suite_is_reused_only_for_the_same_pixels(tmp_path) -> None:
    """The cache key follows the data's content: mirroring one image in place (same
    manifest, same file names) runs the suite again; a failed suite is never reused."""
    import numpy as np
    from PIL import Image

    from medunlearn.data.expectations import cached_manifest_report, manifest_report_key
    from medunlearn.data.images import ImageSpec
    from medunlearn.versioning import dataset_fingerprint

    images = [radiograph(seed=i) for i in range(6)]
    frame = write_export(tmp_path / "data", images)
    spec, classes, runs = ImageSpec(16, 1), ["a", "b"], []

    def run():
        runs.append(1)
        return validate_manifest(frame, tmp_path / "data", classes, spec)

    def key() -> str:
        return manifest_report_key(dataset_fingerprint(tmp_path / "data"), classes, spec, "code")

    first, reused = cached_manifest_report(tmp_path / "cache", key(), run)
    again, reused_again = cached_manifest_report(tmp_path / "cache", key(), run)
    assert (len(runs), reused, reused_again) == (1, False, True)
    assert first.success and again.to_dict() == first.to_dict()
    _, reused_refresh = cached_manifest_report(tmp_path / "cache", key(), run, refresh=True)
    assert (len(runs), reused_refresh) == (2, False)  # --refresh-cache validates again
    _, reused = cached_manifest_report(tmp_path / "cache", key(), run)
    assert (len(runs), reused) == (2, True)  # and stores the refreshed pass
    runs.clear()
    runs.append(1)  # count from here as if the refresh had not happened
    assert manifest_report_key("x", classes, spec, "code") != manifest_report_key(
        "x", classes, spec, "other code"
    )
    assert manifest_report_key("x", classes, spec, "c") != manifest_report_key(
        "x", classes, ImageSpec(16, 3), "c"
    )
    path = tmp_path / "data" / frame["path"][2]
    Image.fromarray(np.ascontiguousarray(np.fliplr(np.asarray(Image.open(path))))).save(path)
    cached_manifest_report(tmp_path / "cache", key(), run)
    assert len(runs) == 2  # same manifest, new pixels: validated again

    images[4] = radiograph(seed=4).astype(np.uint16) * 16  # fails the dynamic-range check
    frame = write_export(tmp_path / "data", images)
    for _ in range(2):
        failed, reused = cached_manifest_report(tmp_path / "cache", key(), run)
        assert not failed.success and not reused
    assert len(runs) == 4


def test_a_failed_refresh_drops_the_stored_pass(tmp_path) -> None:
    """``--refresh-cache`` that fails must not leave the earlier pass to be reused."""
    from medunlearn.data.expectations import ValidationReport, cached_manifest_report

    passed = ValidationReport([])  # no failed expectation: success
    assert passed.success
    cached_manifest_report(tmp_path, "k", lambda: passed)
    assert (tmp_path / "k.json").is_file()

    def broken() -> ValidationReport:
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError):
        cached_manifest_report(tmp_path, "k", broken, refresh=True)
    assert not (tmp_path / "k.json").exists()
