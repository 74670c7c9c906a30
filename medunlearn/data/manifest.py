"""The cohort manifest: one row per image, the one table every pipeline step reads.

Required columns are ``image_id, path, label, split``; ``patient_id`` (the grouping key:
patient, lesion or study), ``device``, ``site`` and ``acquired_at`` are optional, and any other
column is kept as it is. Validation errors name the file, the row and the column, and never
print a raw ``patient_id`` (it is hashed), because manifests carry patient identifiers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medunlearn.errors import Refusal

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "split")
OPTIONAL_COLUMNS: tuple[str, ...] = ("patient_id", "device", "site", "acquired_at")
SPLITS: tuple[str, ...] = ("train", "val", "test")


class ManifestError(Refusal, ValueError):
    """A manifest (or an image it points to) is not usable; the message says where."""


_IDENTIFIER_SALT: bytes | None = None


def set_identifier_salt(salt: bytes | None) -> None:
    """Salt every identifier token (:func:`hash_identifier`) with the project's secret.

    The salt is the forget ledger's (``medunlearn.revision.ledger``). Patient ids are short
    and guessable (``P0529``), so an unsalted hash is reversed by trying every id; the flows
    set the salt whenever the project has one. Process-wide.

    Args:
        salt: the secret bytes, or ``None`` (or empty) for unsalted tokens.
    """
    global _IDENTIFIER_SALT
    _IDENTIFIER_SALT = salt


def identifier_salt() -> bytes | None:
    """Return the salt :func:`set_identifier_salt` set in this process.

    A benchmark sends it to its Dask workers, which start without it.

    Returns:
        The salt, or ``None`` (tokens are unsalted).
    """
    return _IDENTIFIER_SALT


def hash_identifier(value: object) -> str:
    """Turn a patient or image identifier into a stable short token for logs and reports.

    HMAC-SHA256 under the project's salt when one is set (not reversible without it), else
    plain SHA-256 (reversible by enumeration for guessable ids: set a salt).

    Args:
        value: the identifier (compared as ``str(value)``).

    Returns:
        ``"pt-"`` and the first 10 hex digits of the digest.
    """
    if _IDENTIFIER_SALT:
        digest = hmac.new(_IDENTIFIER_SALT, str(value).encode(), hashlib.sha256).hexdigest()
        return "pt-" + digest[:10]
    return "pt-" + hashlib.sha256(str(value).encode()).hexdigest()[:10]


def _row_ref(df: pd.DataFrame, position: int) -> str:
    """``row N (image_id=...)`` with N 1-based over data rows, as a spreadsheet shows them."""
    image_id = df["image_id"].iloc[position] if "image_id" in df.columns else None
    suffix = f" (image_id={image_id})" if image_id is not None and not pd.isna(image_id) else ""
    return f"row {position + 1}{suffix}"


def read_manifest_csv(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV with every column as text, so ids like ``007`` keep their zeros.

    Empty cells become NaN; nothing else is treated as missing.

    Args:
        path: the CSV file.

    Returns:
        The rows (index reset), every column of dtype ``object`` (text).

    Raises:
        ManifestError: the file is missing, empty, not parseable, or holds one column whose
            header shows another delimiter (semicolons, tabs, pipes).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(f"{path}: empty manifest (no header row, no rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManifestError(f"{path}: cannot parse CSV: {first}") from exc
    if len(df.columns) == 1:  # one column whose name holds another delimiter
        (header,) = df.columns
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in str(header):
                raise ManifestError(
                    f"{path}: one column '{header[:60]}': the file looks delimited by "
                    f"{name}; a manifest is comma-separated (save it as CSV with commas)"
                )
    return df.reset_index(drop=True)


def sort_labels(labels: Sequence[str]) -> list[str]:
    """Order class names stably: numerically if every label is an integer, else by text.

    Args:
        labels: labels, possibly repeated (compared as text).

    Returns:
        The distinct labels as text, sorted.
    """
    unique = sorted({str(v) for v in labels})
    if all(v.lstrip("-").isdigit() for v in unique):
        return sorted(unique, key=int)
    return unique


def check_columns(
    df: pd.DataFrame, source: str, required: Sequence[str] = REQUIRED_COLUMNS
) -> None:
    """Check that every required column is present and has no empty cell.

    Args:
        df: the manifest.
        source: the manifest's name, used in errors.
        required: columns that must be present and filled.

    Raises:
        ManifestError: a missing column (listing the found ones), or the first empty cell
            (row and column).
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing required column(s) {missing}; found {list(df.columns)}"
        )
    for column in required:
        empty = np.flatnonzero(df[column].isna().to_numpy())
        if len(empty):
            raise ManifestError(
                f"{source}: {_row_ref(df, int(empty[0]))}, column '{column}': empty value"
            )


def check_splits(df: pd.DataFrame, source: str) -> None:
    """Check split values are known, no split is empty, and no patient is in two splits.

    Args:
        df: the manifest (``split`` column; ``patient_id`` optional).
        source: the manifest's name, used in errors.

    Raises:
        ManifestError: an unknown split value, an empty split, or a patient in more than one
            split (named by its hashed token, never the raw id).
    """
    bad = np.flatnonzero(~df["split"].isin(SPLITS).to_numpy())
    if len(bad):
        i = int(bad[0])
        raise ManifestError(
            f"{source}: {_row_ref(df, i)}, column 'split': unknown split "
            f"'{df['split'].iloc[i]}'; expected one of {', '.join(SPLITS)}"
        )
    for split in SPLITS:
        if not (df["split"] == split).any():
            raise ManifestError(f"{source}: split '{split}' has no rows")
    if "patient_id" not in df.columns:
        return
    known = df.dropna(subset=["patient_id"])
    n_splits = known.groupby("patient_id")["split"].nunique()
    leaking = n_splits[n_splits > 1]
    if len(leaking):
        patient = leaking.index[0]
        rows = known.index[known["patient_id"] == patient]
        where = ", ".join(f"{df['split'].iloc[r]} ({_row_ref(df, int(r))})" for r in rows[:4])
        raise ManifestError(
            f"{source}: column 'patient_id': patient {hash_identifier(patient)} appears in "
            f"more than one split: {where}; {len(leaking)} patient(s) leak across splits"
        )


def check_unique_ids(df: pd.DataFrame, source: str) -> None:
    """Check that ``image_id`` identifies a row: duplicates would make cohorts ambiguous.

    Args:
        df: the manifest.
        source: the manifest's name, used in errors.

    Raises:
        ManifestError: the first duplicated ``image_id`` (its row).
    """
    dup = np.flatnonzero(df["image_id"].duplicated().to_numpy())
    if len(dup):
        raise ManifestError(
            f"{source}: {_row_ref(df, int(dup[0]))}, column 'image_id': duplicate image_id"
        )


def check_labels(df: pd.DataFrame, source: str, class_names: Sequence[str]) -> None:
    """Check that every label is one of the model's classes.

    Args:
        df: the manifest.
        source: the manifest's name, used in errors.
        class_names: the model's classes (compared as text).

    Raises:
        ManifestError: the first row whose label is not a class.
    """
    allowed = {str(c) for c in class_names}
    bad = np.flatnonzero(~df["label"].astype(str).isin(allowed).to_numpy())
    if len(bad):
        i = int(bad[0])
        raise ManifestError(
            f"{source}: {_row_ref(df, i)}, column 'label': '{df['label'].iloc[i]}' is not in "
            f"the class list {list(class_names)}"
        )


def resolve_paths(
    df: pd.DataFrame, root: Path, source: str, check_exists: bool = True
) -> list[Path]:
    """Resolve ``path`` against ``root``; refuse paths that escape it or do not exist.

    Refusing escapes matters: a manifest is user input, and ``../../etc`` must not let a run
    read (or later overwrite) files outside the dataset.

    Args:
        df: the manifest (``path`` column, relative or absolute).
        root: the data root every file must lie under.
        source: the manifest's name, used in errors.
        check_exists: also require each file to exist.

    Returns:
        Absolute, resolved paths, one per row in order.

    Raises:
        ManifestError: the first path that escapes ``root`` or (``check_exists``) is not a
            file.
    """
    root = root.resolve()
    resolved: list[Path] = []
    for i, raw in enumerate(df["path"].astype(str)):
        candidate = Path(raw)
        full = (candidate if candidate.is_absolute() else root / candidate).resolve()
        if not full.is_relative_to(root):
            raise ManifestError(
                f"{source}: {_row_ref(df, i)}, column 'path': '{raw}' escapes the data root {root}"
            )
        if check_exists and not full.is_file():
            raise ManifestError(
                f"{source}: {_row_ref(df, i)}, column 'path': file not found: {full}"
            )
        resolved.append(full)
    return resolved


def clean_manifest(
    df: pd.DataFrame,
    source: str,
    class_names: Sequence[str] | None = None,
    root: Path | None = None,
    check_files: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Check a manifest end to end and return it (labels as text) with its class list.

    Columns, unique ids, splits (no patient in two), labels, and with ``root`` the paths.
    ``split`` values are normalised (stripped, lower case).

    Args:
        df: the manifest.
        source: the manifest's name, used in errors.
        class_names: the model's classes; when ``None`` they are the sorted labels found.
        root: resolves relative paths (``None``: paths not checked).
        check_files: with ``root``, also require each file to exist.

    Returns:
        ``(manifest, class_names)``: a copy with labels as text and splits normalised, and
        the class list as text.

    Raises:
        ManifestError: the first problem found, naming file, row and column.
    """
    check_columns(df, source)
    df = df.copy()
    df["label"] = df["label"].astype(str)
    df["split"] = df["split"].astype(str).str.strip().str.lower()
    check_unique_ids(df, source)
    check_splits(df, source)
    classes = [str(c) for c in class_names] if class_names else sort_labels(df["label"])
    check_labels(df, source, classes)
    if root is not None:
        resolve_paths(df, root, source, check_exists=check_files)
    return df, classes


def assign_splits(
    df: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    group_column: str | None = "patient_id",
) -> pd.DataFrame:
    """Add a ``split`` column, keeping every group (patient, lesion) in exactly one split.

    Splits are stratified by label where the groups allow it (scikit-learn's
    ``StratifiedGroupKFold``): test takes one fold of ``round(1 / test_fraction)``, val one
    fold of the rest, so small classes appear in every split.

    Args:
        df: the manifest rows (``image_id``, ``label``).
        val_fraction: share of rows for validation, in (0, 1).
        test_fraction: share of rows for test, in (0, 1); with ``val_fraction`` below 1.
        seed: seed of the fold assignment.
        group_column: the grouping column; missing or with an empty cell, each image is its
            own group.

    Returns:
        A copy of ``df`` with ``split`` set to ``train``, ``val`` or ``test``.

    Raises:
        ValueError: fractions out of range.
        ManifestError: too few groups for the requested fractions.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions val={val_fraction} test={test_fraction}")
    if group_column and group_column in df.columns and df[group_column].notna().all():
        groups = df[group_column].astype(str).to_numpy()
    else:
        groups = df["image_id"].astype(str).to_numpy()
    labels = df["label"].astype(str).to_numpy()
    index = np.arange(len(df))

    def take(fraction: float, rows: np.ndarray, salt: int) -> np.ndarray:
        n_splits = max(2, round(1 / fraction))
        n_groups = len(np.unique(groups[rows]))
        if n_groups < n_splits:
            raise ManifestError(
                f"only {n_groups} groups ({group_column or 'image_id'}) to split; "
                f"need at least {n_splits} for a {fraction:.0%} split, or give a 'split' column"
            )
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + salt)
        _, held = next(splitter.split(rows, labels[rows], groups[rows]))
        return rows[held]

    test_rows = take(test_fraction, index, 0)
    rest = np.setdiff1d(index, test_rows)
    val_rows = take(val_fraction / (1 - test_fraction), rest, 1)
    split = np.full(len(df), "train", dtype=object)
    split[test_rows] = "test"
    split[val_rows] = "val"
    out = df.copy()
    out["split"] = split
    return out
