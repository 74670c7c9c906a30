"""Every data expectation of a maintenance run, in one place: Great Expectations suites as code.

Two suites run before any training, in an ephemeral GX context (nothing written to disk):

- ``manifest``: required columns present and non-null; labels in the model's class list;
  ``image_id`` and ``path`` unique; split values valid; every file present and decodable at
  the shape the model expects, with intensities in [0, 1] and not constant; what decoding
  cannot see: each image's dynamic range at least ``MIN_DYNAMIC_RANGE`` (12-bit data in a
  16-bit file, a wrong scale), each ``device``/``site`` group's median mean and border
  intensity within ``MAX_GROUP_SHIFT`` of all rows' (inverted polarity, a palette read as
  indices), and every file storing the dataset's usual channel count;
- ``cohorts``: forget-train non-empty; forget and retain disjoint; no patient in both forget
  and retain (consent withdrawal); every retained class still present in retain-train; the
  forget fraction at most ``max_forget_fraction`` unless explicitly overridden.

GX evaluates expectations on data frames; properties of image files (present, decodable,
shape, range) are computed here into per-row columns first, which is the one part no GX
expectation can do. A failure report names each failing expectation with example rows
(by their 1-based row number, so duplicates and empty cells are shown where they are);
patient ids in it are hashed (reports and logs never show raw identifiers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medunlearn.atomic import write_json
from medunlearn.data.images import ImageLoader, ImageSpec
from medunlearn.data.manifest import ManifestError, hash_identifier
from medunlearn.data.request import cohort_masks
from medunlearn.errors import Refusal

REQUIRED_COLUMNS = ("image_id", "path", "label", "split")
SPLITS = ("train", "val", "test")
EXAMPLES = 5


class ValidationFailed(Refusal, RuntimeError):
    """A suite failed; ``report`` names every failing expectation with example rows.

    Args:
        report: the failed report; its :meth:`ValidationReport.summary` is the message.
    """

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


@dataclass
class ExpectationOutcome:
    """The outcome of one expectation: which, on what column, passed or not, and examples.

    ``examples`` are up to ``EXAMPLES`` offending rows (1-based ``row``, ``image_id``, the
    column's value; patient ids hashed).
    """

    suite: str
    expectation: str
    column: str | None
    success: bool
    detail: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    observed: str | None = None  # what GX measured, passed or not (see ``observed_text``)


@dataclass
class ValidationReport:
    """Every expectation outcome of one or more suites."""

    outcomes: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        """Whether every expectation passed (true for an empty report)."""
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The outcomes that failed, in suite order."""
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        """Describe the report in text: a count, then each failure with its examples.

        Returns:
            ``"all N expectations passed"``, or one line per failing expectation (suite, name,
            column, detail) followed by its example rows.
        """
        if self.success:
            return f"all {len(self.outcomes)} expectations passed"
        lines = [f"{len(self.failures)} of {len(self.outcomes)} expectations failed:"]
        for o in self.failures:
            where = f" on '{o.column}'" if o.column else ""
            lines.append(f"- [{o.suite}] {o.expectation}{where}: {o.detail}")
            for ex in o.examples:
                lines.append(f"    e.g. {ex}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict.

        Returns:
            ``{"success": bool, "outcomes": [outcome as dict, ...]}``.
        """
        return {"success": self.success, "outcomes": [asdict(o) for o in self.outcomes]}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict`'s output (a cached report).

        Args:
            obj: the dict (``outcomes`` key).

        Returns:
            The report.

        Raises:
            KeyError: ``obj`` has no ``outcomes``.
            TypeError: an outcome has unknown or missing fields.
        """
        return cls([ExpectationOutcome(**o) for o in obj["outcomes"]])

    def raise_on_failure(self) -> ValidationReport:
        """Refuse a failed report.

        Returns:
            The report itself, when it passed.

        Raises:
            ValidationFailed: some expectation failed (the message lists them).
        """
        if not self.success:
            raise ValidationFailed(self)
        return self


# --------------------------------------------------------------------------- GX plumbing


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    return gx


def _context():
    gx = _gx()
    context = gx.get_context(mode="ephemeral")
    try:  # no per-metric progress bars in flow logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):  # older/newer GX without this setting: cosmetic only
        return context
    return context


def run_suite(
    name: str, frame: pd.DataFrame, expectations: Sequence[Any], id_column: str = "image_id"
) -> list[ExpectationOutcome]:
    """Validate ``frame`` against ``expectations`` in an ephemeral Great Expectations context.

    Nothing is written to disk. Failing outcomes carry up to ``EXAMPLES`` offending rows,
    found by the frame's ``row`` column (1-based) when it has one, else by ``id_column``.

    Args:
        name: the suite's name (also the data asset's).
        frame: the rows to validate, with any computed columns.
        expectations: GX expectation objects.
        id_column: the column that identifies a row when the frame has no ``row`` column.

    Returns:
        One outcome per expectation, in GX's result order.
    """
    context = _context()
    gx = _gx()
    asset = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    # the 1-based row number identifies a row even when image_id is duplicated or empty
    key = "row" if "row" in frame.columns else id_column
    index_columns = [key] if key in frame.columns else []
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns},
    )
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        column = config.kwargs.get("column")
        examples, detail = [], ""
        if not r.success:
            res = r.result or {}
            if res.get("unexpected_percent") is not None:
                detail = f"{res.get('unexpected_count')} unexpected row(s) ({res['unexpected_percent']:.1f}%)"
            elif res.get("observed_value") is not None:
                detail = f"observed {res['observed_value']}"
            if r.exception_info and r.exception_info.get("raised_exception"):
                detail = str(r.exception_info.get("exception_message"))
            examples = _examples(frame, res.get("unexpected_index_list") or [], column, key)
            detail = _describe(config, detail)
        outcomes.append(
            ExpectationOutcome(
                name,
                config.type,
                column,
                bool(r.success),
                detail,
                examples,
                observed_text(r.result or {}),
            )
        )
    return outcomes


def observed_text(result: dict[str, Any], limit: int = 200) -> str | None:
    """What GX measured for one expectation, short.

    Its ``observed_value`` (a column aggregate: distinct values, a count), else how many of
    the rows were unexpected.

    Args:
        result: the expectation's GX ``result`` dict.
        limit: the most characters kept (a long list is cut with ``...``).

    Returns:
        The text, or None when GX measured nothing (e.g. a column's presence).
    """
    if result.get("observed_value") is not None:
        text = json.dumps(_plain_tree(result["observed_value"]), sort_keys=True, default=str)
    elif result.get("element_count") is not None:
        text = f"{result.get('unexpected_count') or 0} of {result['element_count']} rows unexpected"
    else:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):  # no order of its own: sorted, for stable text
        return sorted((_plain_tree(v) for v in value), key=str)
    if isinstance(value, (list, tuple)):
        return [_plain_tree(v) for v in value]
    return _plain(value)


def _describe(config: Any, detail: str) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("column", "batch_id")}
    meta = (config.meta or {}).get("why", "")
    if (config.meta or {}).get("names_the_failure"):  # e.g. the lost class, not every class
        kwargs = {}
    parts = [p for p in (meta, detail, f"expected {kwargs}" if kwargs else "") if p]
    return "; ".join(parts)


def _plain(value: Any) -> Any:
    """A JSON-ready value: empty cells (NaN, NA, NaT) become ``None``, numpy scalars Python."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _examples(
    frame: pd.DataFrame, unexpected: list[Any], column: str | None, key: str
) -> list[dict[str, Any]]:
    """Return up to ``EXAMPLES`` offending rows, patient ids hashed.

    Rows are found by ``key`` (the row number when the frame has one, so each duplicate is
    shown at its own row).
    """
    out = []
    for item in unexpected[:EXAMPLES]:
        row = dict(item) if isinstance(item, dict) else {}
        if key in row and key in frame.columns:
            match = frame[frame[key].astype(str) == str(row[key])]
            if len(match):
                full = match.iloc[0]
                row = {}
                if "image_id" in frame.columns:
                    row["image_id"] = full["image_id"]
                if "row" in frame.columns:
                    row["row"] = int(full["row"])
                if column and column in frame.columns:
                    row[column] = full[column]
                if "patient_id" in frame.columns:
                    row["patient_id"] = full["patient_id"]
                for extra in ("device", "site", "error"):
                    if extra in frame.columns and extra != column and _plain(full[extra]):
                        row[extra] = full[extra]
        if row.get("patient_id") is not None and not pd.isna(row["patient_id"]):
            row["patient_id"] = hash_identifier(row["patient_id"])
        out.append({k: _plain(v) for k, v in row.items()})
    return out


# --------------------------------------------------------------------------- manifest suite


# max - min of a decoded image at the model's size: a 12-bit detector exported unscaled in a
# 16-bit file spans at most 4095/65535 = 0.0625 (10-bit: 0.016); the lowest-contrast real
# image seen (HAM10000 at one channel, 28 px) spans 0.096
MIN_DYNAMIC_RANGE = 0.07
MAX_GROUP_SHIFT = 0.25  # |median of a device/site - median of the rest|, [0, 1] intensity
BORDER = 0.1  # the outer tenth of each side: background, whose polarity flips with the image


def image_properties(manifest: pd.DataFrame, root: Path, spec: ImageSpec) -> pd.DataFrame:
    """Check each row's file and measure its decoded image.

    Columns: ``file_exists``, ``decodable``, ``shape`` (``CxHxW`` of the tensor the model
    will receive: the loader maps channels and resizes, so any decodable 2-D image
    qualifies; volumes and multi-frame files fail to decode), ``stored_shape`` (the file's
    own size, for the report), ``min_intensity``, ``max_intensity``, ``dynamic_range``,
    ``mean_intensity``, ``border_mean`` (all in [0, 1]), ``stored_channels`` and ``error``
    (the first line of a decode error, paths shortened, at most 200 characters).

    Args:
        manifest: the rows (``path`` column, relative to ``root``).
        root: the dataset's folder.
        spec: the model's input (square size in pixels, channels).

    Returns:
        One row per manifest row (same index); NaN statistics for missing or undecodable
        files.
    """
    loader = ImageLoader(spec)
    rows = []
    for path in manifest["path"].astype("string").fillna(""):
        file = root / path
        props = {
            "file_exists": bool(path) and file.is_file(),
            "decodable": False,
            "shape": "",
            "min_intensity": np.nan,
            "max_intensity": np.nan,
            "dynamic_range": np.nan,
            "mean_intensity": np.nan,
            "border_mean": np.nan,
            "stored_channels": np.nan,
            "error": "",
        }
        if props["file_exists"]:
            try:
                image = loader(file)
                props.update(
                    decodable=True,
                    shape="x".join(str(int(s)) for s in image.shape),
                    stored_shape=stored_shape(file) or "",
                    min_intensity=float(image.min()),
                    max_intensity=float(image.max()),
                    dynamic_range=float(image.max() - image.min()),
                    mean_intensity=float(image.mean()),
                    border_mean=border_mean(image.numpy()),
                    stored_channels=stored_channels(file),
                )
            except (ManifestError, OSError, RuntimeError, ValueError) as exc:
                message = str(exc).splitlines()[0].replace(str(file), path)
                props["error"] = message.replace(str(root), "")[:200]
        rows.append(props)
    return pd.DataFrame(rows, index=manifest.index)


def stored_shape(file: Path) -> str | None:
    """Read an image's stored size from its header, before channel mapping and resizing.

    Args:
        file: the image file.

    Returns:
        ``CxHxW`` (alpha not counted), or ``None`` for formats Pillow does not read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            bands = [b for b in im.getbands() if b != "A"]
            return f"{len(bands)}x{im.height}x{im.width}"
    except (UnidentifiedImageError, OSError):
        return None


def border_mean(image: np.ndarray) -> float:
    """Average the outer ``BORDER`` (a tenth of each side, at least 1 pixel) of an image.

    That is the background of a radiograph or a photograph, dark in one polarity and bright
    in the other.

    Args:
        image: array (C, H, W) in [0, 1].

    Returns:
        The border's mean intensity, in [0, 1].
    """
    _, h, w = image.shape
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    mask = np.ones((h, w), dtype=bool)
    mask[bh : h - bh, bw : w - bw] = False
    return float(image[:, mask].mean())


def stored_channels(file: Path) -> float:
    """Count the channels a file stores (alpha not counted).

    Palette, CMYK, YCbCr, LAB and HSV images count 3 (they are decoded as colour).

    Args:
        file: the image file.

    Returns:
        Pillow's band count, or the DICOM Samples per Pixel; NaN when neither header can be
        read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                return 3.0  # decoded as colour (palette entries, Pillow's RGB conversion)
            return float(len([b for b in im.getbands() if b != "A"]))
    except (UnidentifiedImageError, OSError):
        pass  # not a format Pillow reads: try the DICOM header next
    try:
        import pydicom

        return float(pydicom.dcmread(file, stop_before_pixels=True).get("SamplesPerPixel", 1))
    except Exception:  # not DICOM either: decoding reported it
        return float("nan")


def group_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """Compare each ``device`` and ``site`` group's intensities with all rows', and channels.

    ``intensity_shift``: for each row, the largest |median of its group - median of all
    rows| over mean and border intensity (a polarity flip or a palette read as indices moves
    a whole group; the median of all rows follows the majority, so the odd group is the one
    named); 0 when no column has two groups. ``channels_consistent``: the file stores the
    dataset's most common channel count (unknown counts pass).

    Args:
        frame: the rows with :func:`image_properties`' columns (and ``device``/``site``).

    Returns:
        ``intensity_shift`` (in [0, 1] units) and ``channels_consistent`` per row, same
        index.
    """
    out = pd.DataFrame(index=frame.index)
    shift = pd.Series(0.0, index=frame.index)
    for column in ("device", "site"):
        if column not in frame.columns or frame[column].nunique(dropna=True) < 2:
            continue
        for _, members in frame.groupby(column, dropna=True).groups.items():
            for stat in ("mean_intensity", "border_mean"):
                inside, outside = frame.loc[members, stat].median(), frame[stat].median()
                if pd.notna(inside) and pd.notna(outside):
                    shift.loc[members] = np.maximum(shift.loc[members], abs(inside - outside))
    out["intensity_shift"] = shift
    channels = frame["stored_channels"].dropna()
    common = channels.mode().iloc[0] if len(channels) else np.nan
    out["channels_consistent"] = frame["stored_channels"].isna() | (
        frame["stored_channels"] == common
    )
    return out


def manifest_expectations(class_names: Sequence[str], spec: ImageSpec, present: Sequence[str]):
    """Build the manifest suite's expectations.

    Args:
        class_names: the model's classes (allowed labels).
        spec: the model's input (expected decoded shape).
        present: the manifest's columns; value checks are added only for required columns
            that exist (a missing one fails its existence check).

    Returns:
        GX expectation objects, each with a ``why`` in its meta.
    """
    e = _gx().expectations
    shape = f"{spec.channels}x{spec.size}x{spec.size}"
    out = [
        e.ExpectColumnToExist(column=c, meta={"why": "required column"}) for c in REQUIRED_COLUMNS
    ]
    for column in REQUIRED_COLUMNS:
        if column in present:
            out.append(
                e.ExpectColumnValuesToNotBeNull(column=column, meta={"why": "required value"})
            )
    if "label" in present:
        out.append(
            e.ExpectColumnValuesToBeInSet(
                column="label",
                value_set=[str(c) for c in class_names],
                meta={"why": "label must be one of the model's classes"},
            )
        )
    for column in ("image_id", "path"):
        if column in present:
            out.append(e.ExpectColumnValuesToBeUnique(column=column, meta={"why": "duplicate"}))
    if "split" in present:
        out.append(e.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)))
    out += [
        e.ExpectColumnValuesToBeInSet(
            column="file_exists", value_set=[True], meta={"why": "image file missing"}
        ),
        e.ExpectColumnValuesToBeInSet(
            column="decodable", value_set=[True], meta={"why": "image file cannot be decoded"}
        ),
        e.ExpectColumnValuesToBeInSet(
            column="shape", value_set=[shape], meta={"why": f"model expects {shape} images"}
        ),
        e.ExpectColumnValuesToBeBetween(
            column="min_intensity",
            min_value=0.0,
            max_value=1.0,
            meta={"why": "intensities must lie in [0, 1]"},
        ),
        e.ExpectColumnValuesToBeBetween(
            column="max_intensity",
            min_value=0.0,
            max_value=1.0,
            meta={"why": "intensities must lie in [0, 1]"},
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="max_intensity",
            column_B="min_intensity",
            or_equal=False,
            meta={"why": "a constant image is blank or corrupt"},
        ),
        e.ExpectColumnValuesToBeBetween(
            column="dynamic_range",
            min_value=MIN_DYNAMIC_RANGE,
            meta={
                "why": "the decoded image uses a tiny fraction of [0, 1] (e.g. 12-bit data in "
                "a 16-bit file, or a wrong scale): fix the export's scaling"
            },
        ),
        e.ExpectColumnValuesToBeBetween(
            column="intensity_shift",
            max_value=MAX_GROUP_SHIFT,
            meta={
                "why": "these rows' device/site has a median mean or border intensity far "
                "from the median of all rows: one of the groups differs wildly (inverted "
                "polarity, a palette or a scale decoded differently?); compare the groups"
            },
        ),
        e.ExpectColumnValuesToBeInSet(
            column="channels_consistent",
            value_set=[True],
            meta={"why": "the file stores a different number of channels than most files"},
        ),
    ]
    return out


def validate_manifest(
    manifest: pd.DataFrame, root: str | Path, class_names: Sequence[str], spec: ImageSpec
) -> ValidationReport:
    """Run the manifest suite on a dataset's manifest and its files under ``root``.

    Every file is decoded (:func:`image_properties`); see the module docstring for the
    expectations.

    Args:
        manifest: the manifest (any columns; missing required ones fail).
        root: the folder paths are relative to.
        class_names: the model's classes.
        spec: the model's input (square size in pixels, channels).

    Returns:
        The report (not raised: call :meth:`ValidationReport.raise_on_failure`).
    """
    frame = manifest.reset_index(drop=True).copy()
    frame.insert(0, "row", np.arange(1, len(frame) + 1))
    for column in ("image_id", "path", "label"):
        if column in frame.columns:
            frame[column] = frame[column].astype("string")
    if "path" in frame.columns:
        frame = pd.concat([frame, image_properties(frame, Path(root), spec)], axis=1)
    else:
        frame = frame.assign(
            file_exists=False,
            decodable=False,
            shape="",
            min_intensity=np.nan,
            max_intensity=np.nan,
            dynamic_range=np.nan,
            mean_intensity=np.nan,
            border_mean=np.nan,
            stored_channels=np.nan,
            error="no path column",
        )
    frame = pd.concat([frame, group_statistics(frame)], axis=1)
    return ValidationReport(
        run_suite(
            "manifest", frame, manifest_expectations(class_names, spec, list(manifest.columns))
        )
    )


DECODING_PACKAGES = ("great_expectations", "pillow", "pydicom", "monai", "torch", "numpy")


def manifest_report_key(
    data_fingerprint: str, class_names: Sequence[str], spec: ImageSpec, core_hash: str
) -> str:
    """Hash everything the manifest suite's outcome depends on.

    That is the dataset's content hash (manifest and pixels), the model's classes and input
    shape, the core's code (the expectations live in it) and the versions of Great
    Expectations and of the libraries that decode and resize the images
    (:data:`DECODING_PACKAGES`). A passed manifest suite is kept under this key, so a
    revision of already-validated data does not decode every image again (issue 14:
    validation results reusable by data hash).

    Args:
        data_fingerprint: the dataset's content hash
            (:func:`medunlearn.versioning.dataset_fingerprint`).
        class_names: the model's classes.
        spec: the model's input.
        core_hash: the core's source hash (:func:`medunlearn.versioning.source_hash`).

    Returns:
        The SHA-256 as 64 hex digits.

    Raises:
        importlib.metadata.PackageNotFoundError: one of the packages is not installed.
    """
    from importlib.metadata import version

    digest = hashlib.sha256()
    for part in (
        data_fingerprint,
        "\0".join(class_names),
        f"{spec.channels}x{spec.size}",
        core_hash,
        *(f"{name} {version(name)}" for name in DECODING_PACKAGES),
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def cached_manifest_report(
    cache_dir: str | Path, key: str, run: Any, refresh: bool = False
) -> tuple[ValidationReport, bool]:
    """Return the manifest suite's report for ``key`` from ``cache_dir``, or run the suite.

    A report ``run()`` returns is stored when it passed (a failure is always recomputed: its
    data will change); a cache that cannot be written costs time, not the revision (logged).
    An unreadable cache file counts as a miss.

    Args:
        cache_dir: folder of ``<key>.json`` reports.
        key: :func:`manifest_report_key` of the inputs.
        run: called without arguments on a miss; returns a :class:`ValidationReport`.
        refresh: ignore a stored report (the revision's ``--refresh-cache``) and replace it.

    Returns:
        ``(report, reused)``: ``reused`` is true when the report came from the cache.
    """
    path = Path(cache_dir) / f"{key}.json"
    if refresh:  # a refresh that fails must not leave the old pass to be reused later
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    else:
        try:
            return ValidationReport.from_dict(json.loads(path.read_text())), True
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: validate
    report = run()
    if report.success:
        try:
            write_json(path, report.to_dict())
        except OSError as exc:  # a read-only cache costs time, not the revision
            logging.getLogger(__name__).warning("validation cache not written (%s): %s", path, exc)
    return report, False


# --------------------------------------------------------------------------- cohort suite


def earlier_requests(request: Any) -> tuple[Any, ...]:
    """List the earlier requests ``request`` keeps forgotten.

    Args:
        request: a ``ForgetRequest``, or ``None``.

    Returns:
        Those forgotten again (``carried``), then those the starting model already forgot
        (``inherited``); empty for ``None``.
    """
    if request is None:
        return ()
    return (*getattr(request, "carried", ()), *getattr(request, "inherited", ()))


def consent_requests(request: Any) -> list[Any]:
    """List the consent withdrawals among a request and the earlier ones it keeps forgotten.

    Args:
        request: a ``ForgetRequest`` (with ``carried``: forgotten again; ``inherited``:
            already forgotten by the starting model), or ``None``.

    Returns:
        The requests whose reason is ``consent_withdrawal``, the request's own first.
    """
    return [
        r
        for r in (request, *earlier_requests(request))
        if r is not None and r.reason == "consent_withdrawal"
    ]


def cohort_frame(manifest: pd.DataFrame, masks: Any, request: Any = None) -> pd.DataFrame:
    """Tabulate the training rows by cohort, label and patient for the cohort suite.

    A patient is *withdrawing* when a consent withdrawal (the request or one it carries)
    selected them: only their images must all be in forget-train (a retired class's patients
    keep other images). Without a consent withdrawal, every forget-train patient counts.

    Args:
        manifest: the dataset's manifest.
        masks: the request's ``CohortMasks``.
        request: the ``ForgetRequest`` (with its earlier requests), or ``None``.

    Returns:
        One row per forget-train or retain-train row: ``image_id``, ``label`` (text),
        ``patient_id`` (when present), ``cohort``, ``row`` (1-based manifest row) and
        ``patient_in_forget_and_retain``.

    Raises:
        RequestError: a consent withdrawal's own cohort cannot be computed.
    """
    from dataclasses import replace

    m = manifest.reset_index(drop=True)
    train = masks.forget_train | masks.retain_train
    frame = m.loc[train, [c for c in ("image_id", "label", "patient_id") if c in m.columns]].copy()
    frame["cohort"] = np.where(masks.forget_train[train], "forget_train", "retain_train")
    frame["row"] = np.flatnonzero(train) + 1
    consents = consent_requests(request)
    if "patient_id" in frame.columns:
        if request is None or not consents:
            withdrawing = masks.forget_train
        else:
            withdrawing = np.zeros(len(m), dtype=bool)
            for r in consents:  # the request's own cohort (its fraction sampling included)
                withdrawing |= cohort_masks(m, replace(r, carried=(), inherited=())).forget_train
        forgotten = set(m.loc[withdrawing, "patient_id"].astype(str))
        retained = set(frame.loc[frame["cohort"] == "retain_train", "patient_id"].astype(str))
        both = forgotten & retained
        frame["patient_in_forget_and_retain"] = frame["patient_id"].astype(str).isin(both)
    else:
        frame["patient_in_forget_and_retain"] = False
    frame["label"] = frame["label"].astype(str)
    return frame.reset_index(drop=True)


def cohort_expectations(
    reason: str,
    retained_classes: Sequence[str],
    max_forget_fraction: float,
    override_fraction: bool,
):
    """Build the cohort suite's expectations.

    Args:
        reason: the request's reason (``consent_withdrawal`` adds the patient check).
        retained_classes: classes that must survive (checked by a separate suite in
            :func:`validate_cohorts`; unused here).
        max_forget_fraction: the largest share of training rows in forget-train, in (0, 1].
        override_fraction: skip the forget-fraction check.

    Returns:
        GX expectation objects: both cohorts non-empty, disjoint, values known, the patient
        check for consent withdrawals and the forget-fraction bound.
    """
    e = _gx().expectations
    out = [
        e.ExpectColumnDistinctValuesToContainSet(
            column="cohort", value_set=["forget_train"], meta={"why": "forget-train is empty"}
        ),
        e.ExpectColumnDistinctValuesToContainSet(
            column="cohort", value_set=["retain_train"], meta={"why": "retain-train is empty"}
        ),
        e.ExpectColumnValuesToBeUnique(
            column="image_id", meta={"why": "an image is in both forget and retain"}
        ),
        e.ExpectColumnValuesToBeInSet(column="cohort", value_set=["forget_train", "retain_train"]),
    ]
    if reason == "consent_withdrawal":
        out.append(
            e.ExpectColumnValuesToBeInSet(
                column="patient_in_forget_and_retain",
                value_set=[False],
                meta={"why": "a withdrawing patient still has images in retain-train"},
            )
        )
    if not override_fraction:
        out.append(
            e.ExpectColumnValuesToBeInSet(
                column="cohort",
                value_set=["retain_train"],
                mostly=1.0 - max_forget_fraction,
                meta={
                    "why": f"forget fraction above validation.max_forget_fraction "
                    f"{max_forget_fraction} (set override to allow)"
                },
            )
        )
    return out


def retained_classes(class_names: Sequence[str], request: Any) -> list[str]:
    """List the classes that must survive the revision.

    All classes, minus those a class retirement retires (this request or an earlier one of
    the forget ledger it keeps forgotten).

    Args:
        class_names: the model's classes.
        request: the ``ForgetRequest``, with its earlier requests.

    Returns:
        The surviving class names as text, in ``class_names`` order.
    """
    retired = set()
    for r in (request, *earlier_requests(request)):
        if r.reason == "class_retirement":
            retired |= {str(v) for v in r.selector.get("labels", [])}
    return [str(c) for c in class_names if str(c) not in retired]


def validate_cohorts(
    manifest: pd.DataFrame,
    masks: Any,
    request: Any,
    class_names: Sequence[str],
    max_forget_fraction: float,
    override_fraction: bool = False,
) -> ValidationReport:
    """Run the cohort suite for a request's masks (``medunlearn.data.request``).

    Two suites: ``cohorts`` (non-empty, disjoint, patients, forget fraction) and
    ``retain_classes`` (every retained class keeps an image in retain-train; the lost ones
    are named, and whether earlier requests' rows contribute).

    Args:
        manifest: the dataset's manifest.
        masks: the request's ``CohortMasks``.
        request: the ``ForgetRequest``, with its earlier requests.
        class_names: the model's classes.
        max_forget_fraction: ``validation.max_forget_fraction``, in (0, 1].
        override_fraction: ``validation.override_fraction``: skip the fraction check.

    Returns:
        The report of both suites (not raised).
    """
    frame = cohort_frame(manifest, masks, request)
    keep = retained_classes(class_names, request)
    reason = "consent_withdrawal" if consent_requests(request) else request.reason
    outcomes = run_suite(
        "cohorts",
        frame,
        cohort_expectations(reason, keep, max_forget_fraction, override_fraction),
    )
    retain = frame[frame["cohort"] == "retain_train"]
    # name the class(es) lost, not the whole list, and say when earlier requests' rows
    # (kept forgotten by this revision) are part of what removed them
    lost = sorted(set(map(str, keep)) - set(retain["label"].astype(str)))
    why = "a retained class has no image left in retain-train"
    if lost:
        why = f"retained class(es) {lost} would have no image left in retain-train"
        earlier = len(getattr(request, "carried", ())) + len(getattr(request, "inherited", ()))
        if earlier:
            why += f" (with the rows of {earlier} earlier request(s) kept forgotten)"
    e = _gx().expectations
    outcomes += run_suite(
        "retain_classes",
        retain,
        [
            e.ExpectColumnDistinctValuesToContainSet(
                column="label", value_set=keep, meta={"why": why, "names_the_failure": True}
            )
        ],
    )
    return ValidationReport(outcomes)
