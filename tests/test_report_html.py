"""The revision's HTML report as a reviewer's browser shows it (issue 28).

A record whose values are known (gates with a caveat, a failing informative check, a check
that did not apply), the cohort validation that the pipeline's own Great Expectations suite
writes for a generated manifest, and a trade-off plot drawn by the project's figure code are
rendered by ``card_files``; Debian's chromium, driven by Playwright, opens the file with no
network. Under ``CI=true`` a missing browser fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest

from medunlearn.data.expectations import validate_cohorts
from medunlearn.data.manifest import hash_identifier
from medunlearn.data.request import ForgetRequest, cohort_masks
from medunlearn.revision.candidates import evidence_caveats
from medunlearn.revision.card import card_files
from medunlearn.revision.report import candidates_figure, revision_title

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PATIENT = "PAT-0042"  # the withdrawing patient: in the request and the manifest, never shown
REQUEST_HASH = "647373cd9d5c3695"


def browser_or_reason() -> str | None:
    """Why the browser cannot run here, or None."""
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        return f"chromium not installed ({CHROMIUM}; apt-get install chromium, as .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install -c constraints.txt -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser():
    why = browser_or_reason()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the HTML report cannot be checked: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


def manifest() -> pd.DataFrame:
    """20 images of 10 patients (2 each), 16 in train; patient 2 is ``PATIENT``."""
    rows = []
    for i in range(20):
        patient = PATIENT if i // 2 == 2 else f"P{i // 2:03d}"
        rows.append(
            {
                "image_id": f"img-{i:03d}",
                "path": f"images/{i}.png",
                "label": str(i % 2),
                "split": "train" if i < 16 else "test",
                "patient_id": patient,
            }
        )
    return pd.DataFrame(rows)


# the cohort suites of a consent withdrawal (medunlearn.data.expectations), by hand
EXPECTED_VALIDATION = sorted(
    [
        ("cohorts", "expect_column_distinct_values_to_contain_set", "cohort", "pass"),
        ("cohorts", "expect_column_distinct_values_to_contain_set", "cohort", "pass"),
        ("cohorts", "expect_column_values_to_be_unique", "image_id", "pass"),
        ("cohorts", "expect_column_values_to_be_in_set", "cohort", "pass"),
        ("cohorts", "expect_column_values_to_be_in_set", "patient_in_forget_and_retain", "pass"),
        ("cohorts", "expect_column_values_to_be_in_set", "cohort", "pass"),  # forget fraction
        ("retain_classes", "expect_column_distinct_values_to_contain_set", "label", "pass"),
    ]
)

CHECKS = [  # name, role, status, value, bound, underpowered, detail
    (
        "membership",
        "required",
        "pass",
        0.41,
        0.55,
        True,
        "AUC 0.410; underpowered: 1 forgotten group(s) < 10",
    ),
    ("retain_drop", "required", "pass", 0.004, 0.03, False, ""),
    ("class_recall_drop", "informative", "fail", 0.2, 0.1, False, "largest drop: class 1"),
    ("over_forgetting", "informative", "not_applicable", None, -0.05, False, "no held-out twin"),
]
EXPECTED_GATES = {  # name: (outcome shown, caveat shown)
    "membership": ("PASS", "underpowered: membership: 1 forgotten group(s) < 10"),
    "retain_drop": ("PASS", ""),
    "class_recall_drop": ("FAIL", ""),
    "over_forgetting": ("n/a", ""),
}
NOT_DISCRIMINATING = (
    "not discriminating: the deployed model passes the consent_withdrawal profile too"
)


def png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]  # IHDR: width, height


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    frame = manifest()
    request = ForgetRequest("consent_withdrawal", {"patient_ids": [PATIENT]})
    masks = cohort_masks(frame, request)
    validation = {
        "request": REQUEST_HASH,
        **validate_cohorts(frame, masks, request, ["0", "1"], 0.5).to_dict(),
    }
    gates = {
        "reason": "consent_withdrawal",
        "passed": True,
        "failed": [],
        "undecided": [],
        "replacements": {},
        "checks": [
            dict(
                zip(
                    ("name", "role", "status", "value", "bound", "underpowered", "detail"),
                    c,
                    strict=True,
                )
            )
            | {"rule": f"rule of {c[0]}"}
            for c in CHECKS
        ],
    }
    record = {
        "model": "classifier",
        "version": "v1.3.0",
        "kind": "unlearned",
        "parent": "v1.2.0",
        # raw identifiers, as a careless caller might pass them: the report must not show them
        "requests": [
            {"id": REQUEST_HASH, "reason": "consent_withdrawal", "selector": request.selector}
        ],
        "request_hash": REQUEST_HASH,
        "revision_id": "rev-0123456789ab",
        "candidate": "neggrad_plus",
        "counts": masks.counts,
        "gates": gates,
        "caveats": evidence_caveats(gates, {"passed": True}),
        "deployed_gates_passed": True,
        "metrics": {"forget_train_acc": 1.0, "retain_test_acc": 0.97, "membership": {"auc": 0.41}},
        "artifacts": {"model.pt": "ab" * 32},
    }
    rows = [
        {"candidate": "neggrad_plus", "method": "neggrad_plus", "passed": True, "selected": True},
        {"candidate": "finetune", "method": "finetune", "passed": False, "selected": False},
    ]
    rows = [{**r, "forget_train_acc": 0.5, "retain_test_acc": 0.96} for r in rows]
    title = revision_title("classifier", "v1.3.0", "consent_withdrawal", REQUEST_HASH)
    fig = candidates_figure(rows, {"forget_train_acc": 1.0, "retain_test_acc": 0.97}, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    plot = buffer.getvalue()
    history = [{"stage": "candidate", "by": "medunlearn", "at": "2026-01-01", "why": "registered"}]
    files = card_files(record, history, validation=validation, plot_png=plot)
    folder = tmp_path_factory.mktemp("record")
    for name, text in files.items():
        (folder / name).write_text(text)
    forget = int(masks.forget_train.sum())
    train = int((masks.forget_train | masks.retain_train).sum())
    return {
        "path": folder / "report.html",
        "validation": validation,
        "plot_width": png_width(plot),
        "forget": forget,
        "train": train,
        "files": files,
    }


def test_the_record_fixture_is_what_the_test_assumes(report) -> None:
    assert report["forget"] == 2 and report["train"] == 16  # patient 2: images 4 and 5
    assert report["validation"]["success"]
    assert sorted(report["files"]) == ["card.json", "card.md", "report.html"]


def test_the_report_in_a_headless_browser(browser, report) -> None:
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report["path"].resolve().as_uri(), wait_until="load")

    assert page.title() == (
        f"Revision report: classifier v1.3.0 · request consent_withdrawal {REQUEST_HASH}"
    )
    facts = {
        row.locator("th").inner_text(): row.locator("td").inner_text()
        for row in page.locator("table.facts tr").all()
    }
    assert facts["model"] == "classifier" and facts["version"] == "v1.3.0"
    assert facts["parent version"] == "v1.2.0" and facts["selected candidate"] == "neggrad_plus"
    assert facts["request hash"] == REQUEST_HASH and facts["request reason"] == "consent_withdrawal"
    counts = {
        r.locator("td").nth(0).inner_text(): int(r.locator("td").nth(1).inner_text())
        for r in page.locator("table.counts tr").all()[1:]
    }
    assert counts["forget_train"] == report["forget"]
    assert counts["retain_train"] == report["train"] - report["forget"]

    # gates: each row's outcome and caveat; the pass's general caveat above the table
    for name, (outcome, caveat) in EXPECTED_GATES.items():
        row = page.locator(f'#gate-table tr[data-check="{name}"]')
        assert row.locator("td.outcome").inner_text() == outcome, name
        assert row.locator("td.caveat").inner_text() == caveat, name
    assert page.locator("#gate-table tr[data-check]").count() == len(EXPECTED_GATES)
    assert NOT_DISCRIMINATING in page.locator("#caveats").inner_text()
    assert page.locator("#gate-table td.outcome.fail").count() == 1

    # validation: one row per expectation of the cohort suites, as the suite defines them
    rows = page.locator("#validation-table tr").all()[1:]
    cells = [[c.inner_text() for c in r.locator("td").all()] for r in rows]
    assert sorted((c[0], c[1], c[2], c[3]) for c in cells) == EXPECTED_VALIDATION
    fraction = [c[4] for c in cells if c[2] == "cohort" and "unexpected" in c[4]]
    assert f"{report['forget']} of {report['train']} rows unexpected" in fraction
    assert page.locator("#validation-summary").inner_text().startswith("7 of 7 expectations")

    # the plot: embedded, decoded by the browser at the PNG's own size
    natural = page.eval_on_selector("#tradeoff-plot", "img => img.complete && img.naturalWidth")
    assert natural == report["plot_width"] > 0

    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    content = page.content()
    for identifier in (PATIENT, hash_identifier(PATIENT)):
        assert identifier not in content and identifier not in page.inner_text("body")
    assert "patient_ids: 1 id(s)" in page.inner_text("body")
    page.close()
