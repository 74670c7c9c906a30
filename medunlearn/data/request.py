"""Forget requests and the four cohorts every unlearning run and metric is built on.

A request says *why* (``reason``) and *what* (``selector``); ``fraction`` forgets only part of
the selected training rows, sampled by patient group so no patient is half-forgotten. The
cohorts are:

- forget-train: selected training rows (the data whose influence must go),
- retain-train: every other training row, less the rows of earlier requests the model
  already forgot (``inherited``: in neither cohort, never unlearned again),
- forget-test: held-out (test) rows matching the same selector: the non-members the
  membership attack compares forget-train against, from the same distribution,
- retain-test: every other test row (all test rows when the selector covers the whole test
  split, e.g. ``selector: {all: true}`` with a ``fraction`` of patients: none of them is
  forgotten, so the whole split measures retention);

plus the same split of ``val`` for tuning. The request hash goes into every result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from medunlearn.data.dataset import select_rows
from medunlearn.data.images import LabelledImages
from medunlearn.data.manifest import hash_identifier, sort_labels
from medunlearn.errors import Refusal
from medunlearn.settings import REASONS

SELECTOR_KEYS = ("all", "labels", "devices", "patient_ids", "image_ids", "query")
# selector keys that list identifiers: hashed or counted wherever a request is shown
IDENTIFIER_KEYS = ("patient_ids", "image_ids")


class RequestError(Refusal, ValueError):
    """A forget request is malformed or selects nothing to forget."""


@dataclass(frozen=True)
class ForgetRequest:
    """Why and what to forget. Selector criteria combine with AND."""

    reason: str
    selector: dict[str, Any]
    fraction: float | None = None
    seed: int = 0
    note: str = ""
    # Earlier requests (the forget ledger) the model this revision starts from has NOT
    # forgotten (e.g. applied only in a version that never reached production): their
    # training rows are forgotten again and never retained (``cohort_masks``).
    carried: tuple[ForgetRequest, ...] = ()
    # Earlier requests the starting model already forgot (its registry record applies them):
    # their rows are neither forgotten again nor retained. Both are built from the ledger
    # and the parent's record; a request file may list them under ``carried`` and
    # ``inherited`` (``medunlearn reproduce`` does, in its scratch worktree).
    inherited: tuple[ForgetRequest, ...] = ()

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise RequestError(f"reason '{self.reason}' is not one of {', '.join(REASONS)}")
        unknown = set(self.selector) - set(SELECTOR_KEYS)
        if unknown or not self.selector:
            raise RequestError(
                f"selector needs one or more of {', '.join(SELECTOR_KEYS)}; got {sorted(self.selector)}"
            )
        for key in ("labels", "devices", "patient_ids", "image_ids"):
            values = self.selector.get(key)
            if key in self.selector and (
                not isinstance(values, list | tuple)
                or not values
                or any(isinstance(v, list | dict) for v in values)
            ):
                raise RequestError(
                    f"selector '{key}' must be a non-empty list (e.g. {key}: [a, b]), got "
                    f"{type(values).__name__}"
                )
        if self.fraction is not None and (
            isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float)
        ):
            raise RequestError(f"fraction must be a number in (0, 1], got {self.fraction!r}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise RequestError(f"fraction must be in (0, 1], got {self.fraction}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise RequestError(f"seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str = "request") -> ForgetRequest:
        """A request from a mapping (a request file's content or a flow parameter).

        Args:
            obj: ``reason``, ``selector`` and optionally ``fraction``, ``seed``, ``note``,
                ``carried`` and ``inherited`` (lists of earlier requests as mappings).
            where: what ``obj`` came from, for error messages.

        Returns:
            The request, with its earlier requests parsed the same way.

        Raises:
            RequestError: an unknown key, a bad reason or selector, or an earlier-request
                list that is not a list of valid requests.
        """
        nested = ("carried", "inherited")
        try:
            fields = set(cls.__dataclass_fields__) - set(nested)
            unknown = sorted(set(obj) - fields - set(nested))
            if unknown:  # a misspelt key would silently forget less than was asked
                raise RequestError(
                    f"unknown key(s) {unknown}; a request has {sorted(fields | set(nested))}"
                )
            earlier: dict[str, tuple[ForgetRequest, ...]] = {}
            for key in nested:
                listed = obj.get(key) or []
                if not isinstance(listed, list):
                    raise RequestError(f"{key} must be a list of earlier requests")
                earlier[key] = tuple(
                    cls.from_dict(c, f"{where}: {key}[{i}]") for i, c in enumerate(listed)
                )
            return cls(**{k: obj[k] for k in obj if k in fields}, **earlier)
        except TypeError as exc:
            raise RequestError(f"{where}: {exc}") from exc
        except RequestError as exc:
            raise RequestError(f"{where}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> ForgetRequest:
        """Read a YAML or JSON request file (YAML is a superset of JSON).

        Args:
            path: the request file.

        Returns:
            The request (see :meth:`from_dict` for its keys).

        Raises:
            RequestError: the file is missing, not valid YAML (line and column named), not a
                mapping, or not a valid request.
        """
        path = Path(path)
        if not path.is_file():
            raise RequestError(f"{path}: request file not found")
        try:
            obj = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            raise RequestError(f"{path}: not valid YAML{line}") from exc
        if not isinstance(obj, dict):
            raise RequestError(f"{path}: a request is a mapping with reason and selector")
        return cls.from_dict(obj, str(path))

    @property
    def hash(self) -> str:
        """Stable short hash of the request's content (16 hex digits; key order does not matter).

        Identifiers (``patient_ids``, ``image_ids``) enter as their :func:`hash_identifier`
        tokens and the free-text ``note`` not at all: reports and ONNX metadata carry this hash,
        and a hash over raw patient ids could be reversed by trying every id (the tokens are
        salted when the project has a salt). Earlier requests (``carried``, ``inherited``) are
        part of it.
        """
        blob = json.dumps(_tokenised(asdict(self)), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _tokenised(obj: dict[str, Any]) -> dict[str, Any]:
    """A request dict (``asdict``) with identifier lists replaced by their tokens."""
    selector = dict(obj.get("selector") or {})
    for key in ("patient_ids", "image_ids"):
        if key in selector:
            selector[key] = sorted(hash_identifier(v) for v in selector[key])
    out = {**obj, "selector": selector, "note": ""}  # free text may name a patient
    out["carried"] = [_tokenised(c) for c in obj.get("carried") or []]
    # rows kept out of every cohort change the run, so they are part of the hash; absent
    # when empty, so a request without them hashes as it did before the field existed
    inherited = [_tokenised(c) for c in obj.get("inherited") or []]
    out.pop("inherited", None)
    if inherited:
        out["inherited"] = inherited
    return out


def selector_mask(manifest: pd.DataFrame, selector: dict[str, Any]) -> np.ndarray:
    """Select the rows matching every criterion of the selector (criteria combine with AND).

    Args:
        manifest: the manifest (``label``, ``device``, ``patient_id``, ``image_id`` columns
            as the selector needs them).
        selector: ``all: true``, ``labels``, ``devices``, ``patient_ids``, ``image_ids``
            (lists, compared as text) and ``query`` (a pandas query).

    Returns:
        Boolean mask (N,) over the manifest's rows, in their order.

    Raises:
        RequestError: ``all`` other than ``true``, a criterion whose column the manifest
            lacks, a named patient or image id that matches no row (positions named, never
            the ids), or a bad query.
    """
    mask = np.ones(len(manifest), dtype=bool)
    if "all" in selector and selector["all"] is not True:
        raise RequestError("selector 'all' must be true (every row; narrow it with 'fraction')")
    columns = {
        "labels": "label",
        "devices": "device",
        "patient_ids": "patient_id",
        "image_ids": "image_id",
    }
    for key, column in columns.items():
        if key in selector:
            if column not in manifest.columns:
                raise RequestError(f"selector '{key}' needs a '{column}' column in the manifest")
            values = [str(v) for v in selector[key]]
            present = manifest[column].astype(str)
            if key in ("patient_ids", "image_ids"):  # a named id must exist: never half-apply
                missing = [i for i, v in enumerate(values) if not present.eq(v).any()]
                if missing:  # positions, not values: an id may name a patient
                    raise RequestError(
                        f"selector '{key}': {len(missing)} of {len(values)} ids match no "
                        f"'{column}' in the manifest (positions {missing[:10]})"
                    )
            mask &= present.isin(set(values)).to_numpy()
    if "query" in selector:
        if not isinstance(selector["query"], str):
            raise RequestError(f"selector 'query' must be a text, got {selector['query']!r}")
        try:
            mask &= select_rows(manifest.reset_index(drop=True), selector["query"])
        except ValueError as exc:  # a bad expression or a column the manifest lacks
            raise RequestError(f"selector 'query': {exc}") from exc
    return mask


@dataclass
class CohortMasks:
    """Boolean masks over the manifest rows, one per cohort."""

    forget_train: np.ndarray
    retain_train: np.ndarray
    forget_val: np.ndarray
    retain_val: np.ndarray
    forget_test: np.ndarray
    retain_test: np.ndarray
    request_hash: str
    selected: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    counts: dict[str, int] = field(default_factory=dict)


def cohort_masks(manifest: pd.DataFrame, request: ForgetRequest) -> CohortMasks:
    """Split the manifest into forget/retain cohorts for each split.

    Forget-train is the selected training rows (a seeded ``fraction`` of their patient
    groups when set) plus the training rows of ``carried`` requests; the training rows of
    ``inherited`` requests are in neither cohort. Held-out rows any of them selects are never
    retained (see the module docstring for every cohort).

    Args:
        manifest: the dataset's manifest (``split`` column and the selector's columns).
        request: the request, with its earlier requests.

    Returns:
        The six masks (N,) over the manifest's rows (index reset), the request's hash, the
        rows selected by it or an earlier request, and the count of each cohort
        (``inherited_train`` too when there are inherited requests).

    Raises:
        RequestError: the request (or an earlier one, said so) selects no training row, or
            its selector is invalid for this manifest.
    """
    manifest = manifest.reset_index(drop=True)
    selected = selector_mask(manifest, request.selector)
    split = manifest["split"].to_numpy()
    forget_train = selected & (split == "train")
    if request.fraction is not None and request.fraction < 1:
        forget_train = _sample_groups(manifest, forget_train, request.fraction, request.seed)
    if not forget_train.any():
        raise RequestError(f"request {request.hash} selects no training rows to forget")
    # earlier requests stay forgotten: none of their rows (any split) counts as retained;
    # the training rows of those the starting model did not forget (``carried``) join
    # forget-train, those it already forgot (``inherited``) are left out of both cohorts
    carried_selected = np.zeros(len(manifest), dtype=bool)
    for earlier in request.carried:
        kept = _earlier_masks(manifest, earlier)
        forget_train |= kept.forget_train
        carried_selected |= kept.selected
    inherited_train = np.zeros(len(manifest), dtype=bool)
    for earlier in request.inherited:
        kept = _earlier_masks(manifest, earlier)
        inherited_train |= kept.forget_train
        carried_selected |= kept.selected
    inherited_train &= ~forget_train  # a row this revision forgets is counted as forgotten
    gone = selected | carried_selected
    masks = CohortMasks(
        forget_train=forget_train,
        retain_train=(split == "train") & ~forget_train & ~inherited_train,
        forget_val=selected & (split == "val"),
        retain_val=_retain_heldout(split == "val", gone),
        forget_test=selected & (split == "test"),
        retain_test=_retain_heldout(split == "test", gone),
        request_hash=request.hash,
        selected=gone,
    )
    masks.counts = {
        name: int(getattr(masks, name).sum())
        for name in (
            "forget_train",
            "retain_train",
            "forget_val",
            "retain_val",
            "forget_test",
            "retain_test",
        )
    }
    if request.inherited:  # training rows forgotten by the starting model: in no cohort
        masks.counts["inherited_train"] = int(inherited_train.sum())
    return masks


def retired_classes(manifest: pd.DataFrame, request: ForgetRequest) -> list[str]:
    """Return the classes a revision retires.

    For each class-retirement request it applies (its own, the ``carried`` and the
    ``inherited`` ones), the labels all of whose training rows that request forgets. A
    retirement of part of a class (``fraction``) retires nothing.

    Args:
        manifest: the dataset's manifest (``label`` and ``split`` columns, labels as text).
        request: the revision's request, with its earlier requests attached.

    Returns:
        Class names, in the manifest's label order (``sort_labels``).

    Raises:
        RequestError: a class-retirement request selects no training row.
    """
    manifest = manifest.reset_index(drop=True)
    train = manifest["split"].to_numpy() == "train"
    labels = manifest["label"].astype(str).to_numpy()
    retired: set[str] = set()
    for one in (request, *request.carried, *request.inherited):
        if one.reason != "class_retirement":
            continue
        forget = cohort_masks(manifest, replace(one, carried=(), inherited=())).forget_train
        for label in set(labels[forget]):
            if not (train & (labels == label) & ~forget).any():
                retired.add(str(label))
    return sort_labels(sorted(retired)) if retired else []


def _earlier_masks(manifest: pd.DataFrame, earlier: ForgetRequest) -> CohortMasks:
    """An earlier request's masks; its refusal says it is the earlier one, not this one."""
    try:
        return cohort_masks(manifest, earlier)
    except RequestError as exc:
        raise RequestError(f"an earlier request this revision keeps forgotten: {exc}") from exc


DEFAULT_MAX_FORGET_FRACTION = 0.3  # validation.max_forget_fraction when the file leaves it out


def check_request(
    manifest: pd.DataFrame,
    request: ForgetRequest,
    validation: dict[str, Any] | None = None,
) -> CohortMasks:
    """Run the checks a request passes before it enters the ledger.

    ``revise --request`` and ``request add`` alike: it selects at least one training row,
    and at most ``validation.max_forget_fraction`` of them (default
    :data:`DEFAULT_MAX_FORGET_FRACTION`, as the validation step) unless
    ``validation.override_fraction``.

    Args:
        manifest: the dataset's validated manifest (one row per image, ``split`` column).
        request: the forget request (its own rows only; earlier ones are not counted).
        validation: the ``validation`` section of ``params.yaml`` (may be empty).

    Returns:
        The request's cohort masks.

    Raises:
        RequestError: no training row selected, or more than the allowed share.
    """
    validation = validation or {}
    max_forget_fraction = float(validation.get("max_forget_fraction", DEFAULT_MAX_FORGET_FRACTION))
    override_fraction = bool(validation.get("override_fraction", False))
    masks = cohort_masks(manifest, request)
    n_train = int((manifest["split"] == "train").sum())
    chosen = int(masks.forget_train.sum())
    if not override_fraction and n_train:
        share = chosen / n_train
        if share > max_forget_fraction:
            raise RequestError(
                f"request {request.hash} selects {chosen} of {n_train} training rows "
                f"({share:.0%}), above validation.max_forget_fraction {max_forget_fraction}; "
                "set validation.override_fraction: true to allow"
            )
    return masks


def _retain_heldout(in_split: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Return the held-out rows the request does not select.

    When the selector covers the whole split (a random ``fraction`` of all patients), every
    held-out row, since none is forgotten.
    """
    rest = in_split & ~selected
    return rest if rest.any() else in_split


def _sample_groups(
    manifest: pd.DataFrame, mask: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Keep a seeded ``fraction`` of the selected groups (patients), whole groups only."""
    key = "patient_id" if "patient_id" in manifest.columns else "image_id"
    groups = manifest.loc[mask, key].astype(str).unique()
    rng = np.random.default_rng(seed)
    n = max(1, round(fraction * len(groups)))
    chosen = set(rng.choice(np.sort(groups), size=n, replace=False))
    return mask & manifest[key].astype(str).isin(chosen).to_numpy()


@dataclass
class Cohorts:
    """Images of each cohort (sharing the decoded tensors of their split).

    ``train``, ``val``, ``test`` and ``manifest`` give the held-out pool the membership
    evidence draws matched non-members from (``medunlearn.evidence.membership``);
    ``pool_splits`` names the splits of that pool: ``("val", "test")`` in a revision,
    ``("val",)`` when a benchmark tunes.
    """

    forget_train: LabelledImages
    retain_train: LabelledImages
    forget_val: LabelledImages
    retain_val: LabelledImages
    forget_test: LabelledImages
    retain_test: LabelledImages
    test: LabelledImages
    class_names: list[str]
    request: ForgetRequest
    masks: CohortMasks
    val: LabelledImages | None = None
    manifest: pd.DataFrame | None = None
    train: LabelledImages | None = None  # the whole split (new requests on the same data)
    pool_check: dict[str, Any] | None = None  # why the pool is what it is (mia.choose_pool)
    pool_splits: tuple[str, ...] = ("val", "test")


def build_cohorts(
    manifest: pd.DataFrame,
    train: LabelledImages,
    val: LabelledImages,
    test: LabelledImages,
    class_names: list[str],
    request: ForgetRequest,
) -> Cohorts:
    """Cut a dataset's opened splits into a request's cohorts, as image sets.

    Args:
        manifest: the dataset's manifest, rows in the order the splits were opened.
        train: the train split's images.
        val: the val split's images.
        test: the test split's images.
        class_names: the model's classes.
        request: the request, with its earlier requests.

    Returns:
        The six cohorts (subsets sharing the splits' tensors), the whole splits, the masks
        and the manifest (index reset); the pool is ``("val", "test")``.

    Raises:
        RequestError: the request selects no training row or is invalid for the manifest.
        ValueError: a split's image count differs from its manifest rows.
    """
    masks = cohort_masks(manifest, request)
    split = manifest.reset_index(drop=True)["split"].to_numpy()

    def part(images: LabelledImages, name: str, mask: np.ndarray) -> LabelledImages:
        in_split = mask[split == name]
        if len(in_split) != len(images):
            raise ValueError(
                f"{name} images ({len(images)}) do not match the manifest ({len(in_split)})"
            )
        return images.subset(in_split)

    return Cohorts(
        forget_train=part(train, "train", masks.forget_train),
        retain_train=part(train, "train", masks.retain_train),
        forget_val=part(val, "val", masks.forget_val),
        retain_val=part(val, "val", masks.retain_val),
        forget_test=part(test, "test", masks.forget_test),
        retain_test=part(test, "test", masks.retain_test),
        test=test,
        class_names=list(class_names),
        request=request,
        masks=masks,
        val=val,
        manifest=manifest.reset_index(drop=True),
        train=train,
    )
