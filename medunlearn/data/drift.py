"""Data drift between a batch of incoming images and the production model's training data.

Three families of two-sample tests, each returning a :class:`DriftTest` (statistic, p-value,
sample sizes) so a monitor, a privacy officer or the ``on-drift`` rule can read the evidence:

1. **Embedding drift**: kernel maximum mean discrepancy (Gretton et al., "A Kernel
   Two-Sample Test", JMLR 2012) on the model's ``features()`` (N, D), Gaussian kernel with
   the median-heuristic bandwidth over the pooled sample, permutation p-value (seeded,
   ``(1 + #{perm >= observed}) / (1 + P)``, Phipson & Smyth 2010). Hand-written: the
   maintained libraries that ship it do not fit. alibi-detect is under the Business Source
   Licence (not an open-source licence for a hospital's production use); torchdrift has
   had no release since 2021; and the test is twenty lines of matrix algebra on a kernel
   we compute once (every permutation is a quadratic form ``s' K s`` on it).
2. **Metadata drift** (``device``, ``site``): a value in the batch that training never saw
   (new), or a training value absent from the batch (vanished), each tested with Fisher's
   exact test on its 2x2 table (this value vs the rest, training vs batch;
   ``scipy.stats.fisher_exact``), so a rare device missing from a small batch is not called
   vanished; and the chi-square test of homogeneity on the whole frequency table
   (``scipy.stats.chi2_contingency``).
3. **Intensity drift**: per-image mean and standard deviation of the [0, 1] pixels,
   two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``).

Each test is judged at ``alpha`` on its own (no multiplicity correction: each finding
names its own attribute, and the payload carries the p-value for anyone who wants one).
Pure functions: no Prefect, no file writes; :mod:`flows.drift` does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from medunlearn.data.images import ImageLoader, ImageSpec
from medunlearn.data.manifest import read_manifest_csv, resolve_paths
from medunlearn.data.request import cohort_masks
from medunlearn.errors import Refusal

EVENT = "medunlearn.data.drift.detected"
PAYLOAD_SCHEMA = "medunlearn.data.drift/1"
METADATA_COLUMNS = ("device", "site")


class DriftError(Refusal, ValueError):
    """Bad drift input (no batch manifest, an empty batch); the message names the file."""


@dataclass(frozen=True)
class DriftTest:
    """One two-sample test between the training data and a batch.

    ``kind``: embedding | new | vanished | frequency | intensity_mean | intensity_std;
    ``value``: the metadata value for new/vanished; ``drifted``: ``p_value < alpha``.
    """

    attribute: str
    kind: str
    statistic: float
    p_value: float
    n_reference: int
    n_batch: int
    drifted: bool
    value: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the test as a JSON-ready dict (``dataclasses.asdict``).

        Returns:
            Every field by name.
        """
        return asdict(self)


def mmd_test(
    reference: np.ndarray,
    batch: np.ndarray,
    permutations: int = 500,
    seed: int = 0,
    alpha: float = 0.01,
) -> DriftTest:
    """Run the kernel MMD two-sample test on embeddings (Gretton et al., JMLR 2012).

    Statistic: the biased (V-statistic) MMD^2 estimate with a Gaussian kernel
    ``exp(-d^2 / (2 s^2))``, ``s`` the median pairwise Euclidean distance of the pooled sample
    (the median heuristic; zero distances left out). p-value by ``permutations`` seeded
    relabellings, ``(1 + #{perm >= observed}) / (1 + permutations)`` (Phipson & Smyth 2010),
    ties up to rounding counted as reached. Memory: one (N + M)^2 float64 kernel.

    Args:
        reference: embeddings of the training data, (N, D) (flattened if more dimensions).
        batch: embeddings of the incoming batch, (M, D).
        permutations: number of random relabellings for the null distribution.
        seed: seed of the permutations.
        alpha: significance level; ``drifted`` is ``p_value < alpha``.

    Returns:
        The ``embedding`` test; ``detail`` holds the bandwidth and the permutation count.
        When every embedding is identical: statistic 0, p-value 1, bandwidth ``None``.

    Raises:
        DriftError: either side has fewer than 2 rows.
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(batch, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise DriftError(f"MMD needs at least 2 images per side, got {len(x)} and {len(y)}")
    pooled = np.concatenate([x, y]).reshape(len(x) + len(y), -1)
    squared = np.square(pooled).sum(1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    positive = d2[np.triu_indices(len(pooled), k=1)]
    positive = positive[positive > 0]  # duplicates would drag the median to 0
    n, m = len(x), len(y)
    if positive.size == 0:  # every embedding identical: nothing can differ
        return DriftTest(
            "embedding",
            "embedding",
            0.0,
            1.0,
            n,
            m,
            False,
            detail={"bandwidth": None, "permutations": permutations},
        )
    bandwidth = math.sqrt(float(np.median(positive)))
    np.divide(d2, -2.0 * bandwidth**2, out=d2)
    kernel = np.exp(d2, out=d2)  # in place: (n + m)^2 float64 once, not three times

    def signs(is_reference: np.ndarray) -> np.ndarray:
        return np.where(is_reference, 1.0 / n, -1.0 / m)

    observed_labels = np.arange(n + m) < n
    observed = float(signs(observed_labels) @ kernel @ signs(observed_labels))
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(observed_labels) for _ in range(permutations)])
    s = signs(shuffled)  # (P, n + m)
    null = np.sum((s @ kernel) * s, axis=1)  # s_p' K s_p for every permutation p (BLAS)
    tie = 1e-12 * max(1.0, abs(observed))  # equal up to rounding counts as reached
    p_value = float((1 + np.sum(null >= observed - tie)) / (1 + permutations))
    return DriftTest(
        attribute="embedding",
        kind="embedding",
        statistic=observed,
        p_value=p_value,
        n_reference=n,
        n_batch=m,
        drifted=p_value < alpha,
        detail={"bandwidth": bandwidth, "permutations": permutations},
    )


def category_tests(
    reference: pd.Series, batch: pd.Series, attribute: str, alpha: float = 0.01
) -> list[DriftTest]:
    """Test one metadata column for new, vanished and re-weighted values.

    A value seen on only one side is tested with Fisher's exact test on its 2x2 table (this
    value vs the rest, training vs batch; ``scipy.stats.fisher_exact``, two-sided), so a
    rare device missing from a small batch is not called vanished; the whole frequency table
    with the chi-square test of homogeneity (``scipy.stats.chi2_contingency``). Values are
    compared as stripped text; missing values are left out.

    Args:
        reference: the column in the training manifest.
        batch: the column in the batch manifest.
        attribute: the column's name (``device``, ``site``).
        alpha: significance level of each test.

    Returns:
        One ``new``/``vanished`` test per one-sided value (statistic: the value's share in the
        batch minus its share in training) and one ``frequency`` test when there are at least
        two values; empty when either side has no value.
    """
    ref = reference.dropna().astype(str).str.strip().value_counts()  # "a " is "a"
    new = batch.dropna().astype(str).str.strip().value_counts()
    n_ref, n_new = int(ref.sum()), int(new.sum())
    if n_ref == 0 or n_new == 0:
        return []
    tests: list[DriftTest] = []
    for value in sorted(set(ref.index) ^ set(new.index)):
        a, b = int(ref.get(value, 0)), int(new.get(value, 0))
        _, p = stats.fisher_exact([[a, n_ref - a], [b, n_new - b]])
        tests.append(
            DriftTest(
                attribute=attribute,
                kind="vanished" if b == 0 else "new",
                value=value,
                statistic=float(b / n_new - a / n_ref),  # share in batch - share in training
                p_value=float(p),
                n_reference=n_ref,
                n_batch=n_new,
                drifted=bool(p < alpha),
                detail={"reference_count": a, "batch_count": b},
            )
        )
    values = sorted(set(ref.index) | set(new.index))
    if len(values) > 1:
        table = np.array([[ref.get(v, 0) for v in values], [new.get(v, 0) for v in values]])
        chi2, p, dof, _ = stats.chi2_contingency(table)
        tests.append(
            DriftTest(
                attribute=attribute,
                kind="frequency",
                statistic=float(chi2),
                p_value=float(p),
                n_reference=n_ref,
                n_batch=n_new,
                drifted=bool(p < alpha),
                detail={
                    "dof": int(dof),
                    "reference_share": {v: round(ref.get(v, 0) / n_ref, 4) for v in values},
                    "batch_share": {v: round(new.get(v, 0) / n_new, 4) for v in values},
                },
            )
        )
    return tests


def image_statistics(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Compute the per-image mean and standard deviation of the pixels.

    Args:
        images: (N, C, H, W) pixels in [0, 1], on the CPU.

    Returns:
        ``(mean, std)``: float64 arrays (N,); the population standard deviation (ddof 0).
    """
    flat = images.reshape(len(images), -1).double()
    return flat.mean(1).numpy(), flat.std(1, unbiased=False).numpy()


def intensity_tests(
    reference: torch.Tensor, batch: torch.Tensor, alpha: float = 0.01
) -> list[DriftTest]:
    """Run two-sample KS tests on per-image mean and standard deviation (``scipy.stats.ks_2samp``).

    Args:
        reference: training images (N, C, H, W) in [0, 1], on the CPU.
        batch: batch images (M, C, H, W) in [0, 1], on the CPU.
        alpha: significance level of each test.

    Returns:
        The ``intensity_mean`` and ``intensity_std`` tests (statistic: the KS distance, in
        [0, 1]); ``detail`` holds each side's median.
    """
    tests = []
    for kind, ref, new in zip(
        ("intensity_mean", "intensity_std"),
        image_statistics(reference),
        image_statistics(batch),
        strict=True,
    ):
        result = stats.ks_2samp(ref, new)
        tests.append(
            DriftTest(
                attribute="intensity",
                kind=kind,
                statistic=float(result.statistic),
                p_value=float(result.pvalue),
                n_reference=len(ref),
                n_batch=len(new),
                drifted=bool(result.pvalue < alpha),
                detail={
                    "reference_median": float(np.median(ref)),
                    "batch_median": float(np.median(new)),
                },
            )
        )
    return tests


@torch.no_grad()
def embeddings(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Compute the model's ``features()`` of images in eval mode, in batches, without gradients.

    Args:
        model: a zoo model (``features`` method); left in eval mode.
        images: (N, C, H, W) pixels in [0, 1], on the model's device.
        batch_size: images per forward pass.

    Returns:
        float64 array (N, D) (features flattened), on the CPU.
    """
    model.eval()
    parts = [model.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(parts).reshape(len(images), -1).double().numpy()


def sample_rows(frame: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """Draw at most ``max_images`` rows without replacement (seeded), kept in manifest order.

    Args:
        frame: the manifest rows.
        max_images: the most rows to keep.
        seed: seed of the draw.

    Returns:
        ``frame`` itself when it is small enough, else the drawn rows (index kept).
    """
    if len(frame) <= max_images:
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), max_images, replace=False))
    return frame.iloc[keep]


def newest_manifest(incoming: str | Path) -> Path:
    """Find the batch manifest to test.

    Args:
        incoming: a CSV file, or a folder of them (``--batch`` or ``drift.incoming``).

    Returns:
        ``incoming`` itself when a file, else the newest ``*.csv`` in that folder (by
        modification time, then name).

    Raises:
        DriftError: the path is neither a file nor a folder, or the folder holds no CSV.
    """
    path = Path(incoming)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DriftError(
            f"batch {path} (--batch or drift.incoming) is neither a manifest nor a folder"
        )
    manifests = sorted(path.glob("*.csv"), key=lambda p: (p.stat().st_mtime, p.name))
    if not manifests:
        raise DriftError(f"batch folder {path} (--batch or drift.incoming) holds no *.csv manifest")
    return manifests[-1]


def read_batch(
    manifest_path: Path, spec: ImageSpec, rows: pd.DataFrame | None = None, decode: bool = True
) -> tuple[pd.DataFrame, torch.Tensor | None]:
    """Read a batch manifest and decode (some of) its images.

    The manifest needs a ``path`` column, relative to its folder; it has no ``label``
    (incoming images are unlabelled). Every row's path is checked, even when only ``rows``
    are decoded.

    Args:
        manifest_path: the batch's CSV.
        spec: the model's input (square size in pixels, channels).
        rows: the rows to return and decode, a subset of the frame this returns (index
            kept); default: all.
        decode: decode the images (``False``: the rows alone).

    Returns:
        ``(rows, images)``: the chosen rows and their images (N, C, H, W) float32 in [0, 1],
        or ``None`` without ``decode``.

    Raises:
        DriftError: no ``path`` column or no rows.
        ManifestError: the CSV is unreadable, a path escapes the folder or is missing, or an
            image does not decode (naming the file).
    """
    frame = read_manifest_csv(manifest_path)
    if "path" not in frame.columns:
        raise DriftError(f"{manifest_path}: batch manifest needs a 'path' column")
    if frame.empty:
        raise DriftError(f"{manifest_path}: batch manifest has no rows")
    files = resolve_paths(frame, manifest_path.parent, str(manifest_path))  # every row checked
    chosen = frame if rows is None else rows
    if not decode:
        return chosen, None
    return chosen, decode_all([files[int(i)] for i in chosen.index], spec)


def decode_all(files: Sequence[Path], spec: ImageSpec) -> torch.Tensor:
    """Decode files to one tensor at the model's input size.

    Args:
        files: the image files (at least one).
        spec: the model's input (square size in pixels, channels).

    Returns:
        float32 (N, C, size, size) in [0, 1].

    Raises:
        ManifestError: a file does not decode (a ``DecodeError`` naming the file).
    """
    load = ImageLoader(spec)
    return torch.stack([load(f) for f in files])


@dataclass
class DriftReport:
    """All tests of one drift-watch run; ``findings`` are the drifted ones."""

    tests: list[DriftTest]
    batch: str
    model: str | None = None
    version: str | None = None
    batch_sha256: str | None = None  # the manifest's bytes: an unchanged batch is not re-run
    notes: list[str] = field(default_factory=list)  # what was not tested, and why

    @property
    def findings(self) -> list[DriftTest]:
        """The tests that drifted (``p_value < alpha``), in test order."""
        return [t for t in self.tests if t.drifted]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict.

        Returns:
            ``batch``, ``batch_sha256``, ``model``, ``version``, ``drifted`` (any finding),
            ``notes`` and every test as a dict.
        """
        return {
            "batch": self.batch,
            "batch_sha256": self.batch_sha256,
            "model": self.model,
            "version": self.version,
            "drifted": bool(self.findings),
            "notes": self.notes,
            "tests": [t.to_dict() for t in self.tests],
        }

    def payloads(self) -> list[dict[str, Any]]:
        """Build one event payload per finding (schema in the README, :data:`PAYLOAD_SCHEMA`).

        Returns:
            Dicts with the schema, the finding's attribute, kind, value, statistic, p-value and
            sample sizes, and the batch, model and version.
        """
        return [
            {
                "schema": PAYLOAD_SCHEMA,
                "attribute": t.attribute,
                "kind": t.kind,
                "value": t.value,
                "statistic": t.statistic,
                "p_value": t.p_value,
                "n_reference": t.n_reference,
                "n_batch": t.n_batch,
                "batch": self.batch,
                "model": self.model,
                "version": self.version,
            }
            for t in self.findings
        ]


def compare_batches(
    reference: pd.DataFrame,
    reference_images: torch.Tensor,
    batch: pd.DataFrame,
    batch_images: torch.Tensor,
    model: torch.nn.Module | None,
    alpha: float = 0.01,
    permutations: int = 500,
    seed: int = 0,
) -> list[DriftTest]:
    """Run every drift test between the training data and a batch.

    Metadata tests use the rows of ``reference``/``batch`` (pass whole manifests: metadata
    needs no decoding, and a device missing from a sample is not missing); image tests use
    the images as given (samples). Metadata columns absent from either manifest are not
    tested (:func:`untested_metadata` says why).

    Args:
        reference: the training rows (``device``/``site`` columns when present).
        reference_images: training images (N, C, H, W) in [0, 1].
        batch: the batch rows.
        batch_images: batch images (M, C, H, W) in [0, 1].
        model: the production model (embedding test), or ``None`` to skip that test.
        alpha: significance level of each test (no multiplicity correction).
        permutations: permutations of the MMD test.
        seed: seed of the MMD permutations.

    Returns:
        The MMD test (with a model), the metadata tests, then the two intensity tests.
    """
    tests: list[DriftTest] = []
    if model is not None:
        tests.append(
            mmd_test(
                embeddings(model, reference_images),
                embeddings(model, batch_images),
                permutations,
                seed,
                alpha,
            )
        )
    for column in METADATA_COLUMNS:
        if column in reference.columns and column in batch.columns:
            tests.extend(category_tests(reference[column], batch[column], column, alpha))
    tests.extend(intensity_tests(reference_images, batch_images, alpha))
    return tests


def untested_metadata(reference: pd.DataFrame, batch: pd.DataFrame) -> list[str]:
    """List the metadata columns the tests skip, and why (said in the report, never silent).

    Args:
        reference: the training manifest.
        batch: the batch manifest.

    Returns:
        One line per column and side: missing, or empty in that manifest.
    """
    why = []
    for column in METADATA_COLUMNS:
        for name, frame in (("training", reference), ("batch", batch)):
            if column not in frame.columns:
                why.append(f"{column}: no such column in the {name} manifest")
            elif frame[column].dropna().astype(str).str.strip().eq("").all():
                why.append(f"{column}: empty in the {name} manifest")
    return why


RULES = ("deprecate_device", "notify_only")


def request_from_finding(payload: dict[str, Any], rules: dict[str, Any]) -> tuple[dict | None, str]:
    """Turn a drift finding into a forget request under ``params.yaml``'s ``drift`` rules.

    Only a *vanished* device can become a request (``on_device_drift: deprecate_device``):
    its training images are what the model must stop relying on. A new device has no
    training images to forget; embedding, intensity and frequency findings follow
    ``on_embedding_drift`` (only ``notify_only`` exists: they name no rows to forget).

    Args:
        payload: one finding's event payload (:meth:`DriftReport.payloads`).
        rules: the ``drift`` section (``on_device_drift``, ``on_embedding_drift``).

    Returns:
        ``(request, why)``: a ``device_deprecation`` request mapping and ``"ok"``, or
        ``None`` and why no request is made.

    Raises:
        DriftError: an unknown rule, a payload of another schema, or one without
            ``attribute``/``kind``.
    """
    for key in ("on_device_drift", "on_embedding_drift"):
        rule = rules.get(key, "notify_only")
        if rule not in RULES:
            raise DriftError(f"drift.{key}: '{rule}' is not one of {list(RULES)}")
    if rules.get("on_embedding_drift", "notify_only") != "notify_only":
        raise DriftError("drift.on_embedding_drift: only notify_only is supported")
    if payload.get("schema", PAYLOAD_SCHEMA) != PAYLOAD_SCHEMA:
        raise DriftError(
            f"drift event payload schema {payload['schema']!r}; expected {PAYLOAD_SCHEMA}"
        )
    missing = [k for k in ("attribute", "kind") if k not in payload]
    if missing:
        raise DriftError(f"drift event payload lacks {missing} (schema {PAYLOAD_SCHEMA})")
    attribute, kind, value = payload["attribute"], payload["kind"], payload.get("value")
    if attribute != "device":
        return None, f"{attribute} drift ({kind}): notify only"
    if rules.get("on_device_drift", "notify_only") == "notify_only":
        return None, f"device drift ({kind} {value}): drift.on_device_drift is notify_only"
    if kind != "vanished" or not value:
        return None, f"device drift ({kind} {value}): only a vanished device has images to forget"
    p = payload.get("p_value")
    note = f"drift: device {value} vanished from batch {Path(str(payload.get('batch', ''))).name}"
    if p is not None:
        note += f" (Fisher p = {float(p):.2g}, {payload.get('n_batch')} batch images)"
    return {"reason": "device_deprecation", "selector": {"devices": [value]}, "note": note}, "ok"


def training_rows(manifest: pd.DataFrame, forgotten: Sequence[Any]) -> pd.DataFrame:
    """Return the rows a model trained on.

    Those are the manifest's train split without the training rows of each forgotten
    request (``ForgetRequest`` objects applied in that model's lineage).

    Args:
        manifest: the dataset's manifest.
        forgotten: the requests the model forgot.

    Returns:
        The remaining training rows (index reset).

    Raises:
        RequestError: a request selects nothing or names a missing column or id.
    """
    manifest = manifest.reset_index(drop=True)
    keep = (manifest["split"] == "train").to_numpy(copy=True)
    for request in forgotten:
        keep &= ~cohort_masks(manifest, request).forget_train
    return manifest[keep]


def heldout_rows(manifest: pd.DataFrame, forgotten: Sequence[Any]) -> pd.DataFrame:
    """Return validation and test rows, without any row a forgotten request selects.

    These are images the model never trained on, the reference for its *features* (features
    of its own training images differ from unseen ones whenever it fits them, which is not
    drift).

    Args:
        manifest: the dataset's manifest.
        forgotten: the requests the model forgot.

    Returns:
        The held-out rows (index reset).

    Raises:
        RequestError: a request selects nothing or names a missing column or id.
    """
    manifest = manifest.reset_index(drop=True)
    keep = manifest["split"].isin(["val", "test"]).to_numpy(copy=True)
    for request in forgotten:
        keep &= ~cohort_masks(manifest, request).selected
    return manifest[keep]


def drift_markdown(report: DriftReport, alpha: float) -> str:
    """Write the drift-watch result for people: every test, its evidence and verdict.

    Args:
        report: the run's tests and context.
        alpha: the significance level the tests used (stated in the text).

    Returns:
        A markdown document (heading, notes, one table row per test), ending in a newline.
    """
    head = "drift found" if report.findings else "no drift"
    lines = [
        f"# Drift watch: {head}",
        "",
        f"Batch `{report.batch}` against the training data of `{report.model}` "
        f"{report.version or '(unregistered)'}; each test at alpha {alpha}.",
        *(f"- not tested: {n}" for n in report.notes),
        "",
        "| attribute | test | value | statistic | p-value | n training | n batch | drift |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in report.tests:
        lines.append(
            f"| {t.attribute} | {t.kind} | {t.value or ''} | {t.statistic:.4g} | {t.p_value:.3g} "
            f"| {t.n_reference} | {t.n_batch} | {'yes' if t.drifted else 'no'} |"
        )
    return "\n".join(lines) + "\n"
