"""The settings schema: every section of ``params.yaml`` typed, with ranges, checked at load.

``check_params`` validates a whole params mapping with pydantic models (one per section,
``extra="forbid"``) and raises :class:`SettingsError` naming the file, the key path
(``unlearn.by_reason.class_retirement.lr``), what is wrong, and for an unknown key or
section the nearest valid name (``difflib.get_close_matches``). pydantic does the typing and
the ranges; this module only declares them and words the first error.

What it does not do: fill in defaults or normalise values. The loaded mapping is returned
unchanged, so section hashes (cache keys, ``params_hash``) stay what they were, and each
step still reads its section with its own defaults. Every field is optional here because a
params file may leave a setting (or a whole section a command does not need) to those
defaults; a *present* setting must be of the right type and in range.

Ranges are the ones the issue names (lr > 0, epochs >= 1, eps > 0, fractions in (0, 1])
plus the obvious others (sizes >= 1, probabilities in (0, 1)). Method settings inside sweep
entries are checked for the shared numeric keys (lr, epochs, ...); which keys a method
accepts at all is checked by ``medunlearn.unlearn.sweep`` against the method's signature.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medunlearn.errors import Refusal

# the forget request reasons, in the order sweeps and reports list them
REASONS = ("class_retirement", "device_deprecation", "consent_withdrawal", "outlier_removal")

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
# strict: a YAML ``true`` is not the integer 1 (pydantic's lax mode would take it)
Count = Annotated[int, Field(ge=1, strict=True)]
Seed = Annotated[int, Field(ge=0, strict=True)]
Fraction = Annotated[float, Field(gt=0, le=1)]  # (0, 1]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]  # (0, 1)
Probability = Annotated[float, Field(ge=0, le=1)]  # [0, 1]


class ConfigError(Refusal, ValueError):
    """A settings file is missing, malformed, or lacks a section a flow needs."""


class SettingsError(ConfigError):
    """A params file has an unknown section or key, or a value of the wrong type or range."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class Augmentation(_Section):
    """Training augmentation: ``flip``, ``rotate_deg`` (degrees), ``shift`` (share of a side)."""

    flip: bool | None = None
    rotate_deg: NonNegative | None = None
    shift: Annotated[float, Field(ge=0, lt=1)] | None = None


class DataSection(_Section):
    """The ``data`` section: which source to materialise, at what image size and split."""

    name: str | None = None
    source: Literal["demo", "medmnist", "csv"] | None = None
    path: str | None = None
    image_size: Annotated[int, Field(ge=4, strict=True)] | None = None
    channels: Literal[1, 3] | None = None
    class_names: list[str] | None = None
    group_column: str | None = None
    val_fraction: OpenFraction | None = None
    test_fraction: OpenFraction | None = None
    seed: Seed | None = None
    root: str | None = None
    track_with_dvc: bool | None = None
    max_image_pixels: Count | None = None


class TrainSection(_Section):
    """The ``train`` section: architecture, recipe and outputs of the deployed model."""

    dataset: str | None = None
    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    epochs: Count | None = None
    batch_size: Count | None = None
    optimizer: Literal["adam", "adamw", "sgd"] | None = None
    lr: Positive | None = None
    weight_decay: NonNegative | None = None
    momentum: Probability | None = None
    scheduler: Literal["cosine", "none"] | None = None
    class_weights: Literal["none", "balanced"] | None = None
    select_metric: Literal["accuracy", "balanced_accuracy", "macro_auc"] | None = None
    augmentation: Augmentation | None = None
    seed: Seed | None = None
    device: str | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    cpu_bf16: bool | None = None
    max_in_memory_mb: Positive | None = None
    output: str | None = None
    report: str | None = None
    metrics: str | None = None
    history: str | None = None
    retrain_output: str | None = None
    retrain_report: str | None = None
    retrain_history: str | None = None


class UnlearnSettings(_Section):
    """PSG's settings (``medunlearn.unlearn.psg.PSGConfig``), all optional."""

    steps: Count | None = None
    step_size: Positive | None = None
    eps: Positive | None = None
    lam: NonNegative | None = None
    lam_schedule: Literal["none", "inverse", "exp", "linear"] | None = None
    gamma: NonNegative | None = None
    noise: Literal["normal", "laplace", "cauchy", "uniform"] | None = None
    noise_scale: Literal["absolute", "relative"] | None = None
    early_exit: bool | None = None
    on_failure: Literal["skip", "retry"] | None = None
    retry_factor: Annotated[float, Field(gt=1)] | None = None
    max_retries: Annotated[int, Field(ge=0, strict=True)] | None = None
    forget_loss: Literal["hard", "soft", "topk"] | None = None
    temperature: Positive | None = None
    topk: Count | None = None
    exclude_own_label: bool | None = None
    phi: NonNegative | None = None
    retain_loss: Literal["hard", "distill"] | None = None
    optimizer: Literal["sgd", "adam"] | None = None
    lr: Positive | None = None
    momentum: Probability | None = None
    weight_decay: NonNegative | None = None
    scheduler: Literal["none", "cosine"] | None = None
    epochs: Count | None = None
    batch_size: Count | None = None
    target_forget_accuracy: Probability | None = None
    bn_mode: Literal["frozen", "recompute", "train"] | None = None
    augment: bool | None = None
    augmentation: Augmentation | None = None
    seed: Seed | None = None
    device: str | None = None
    amp: bool | None = None


class UnlearnSection(UnlearnSettings):
    """The ``unlearn`` section: PSG's settings, with per-reason overrides in ``by_reason``."""

    by_reason: dict[Literal[REASONS], UnlearnSettings | None] | None = None  # type: ignore[valid-type]


# A gate bound is a share (<= 1: a typo like 3 for 3 % would make the gate vacuous); a
# negative bound is allowed on purpose: no candidate can pass, which forces a refusal
# (a dry run of the refusal path).
Bound = Annotated[float, Field(le=1)]


class GateBounds(_Section):
    """Gate bounds of one reason (shares in [0, 1]; see ``medunlearn.evidence.gates``)."""

    max_forget_acc: Bound | None = None
    max_retain_drop: Bound | None = None
    max_balanced_drop: Bound | None = None
    max_class_recall_drop: Bound | None = None
    mia_auc_margin: Annotated[float, Field(le=0.5)] | None = None
    max_member_gap: Bound | None = None


class GatesSection(GateBounds):
    """The ``gates`` section: shared bounds, ``alpha`` and ``min_members``, and per-reason ones."""

    alpha: OpenFraction | None = None
    min_members: Count | None = None
    class_retirement: GateBounds | None = None
    device_deprecation: GateBounds | None = None
    outlier_removal: GateBounds | None = None
    consent_withdrawal: GateBounds | None = None


class ValidationSection(_Section):
    """The ``validation`` section: the largest share of training rows one request may forget."""

    max_forget_fraction: Fraction | None = None
    override_fraction: bool | None = None


class MethodSettings(BaseModel):
    """The numeric settings many unlearning methods share.

    Other keys are the method's own (checked against its signature by
    ``medunlearn.unlearn.sweep``).
    """

    model_config = ConfigDict(extra="allow")
    lr: Positive | None = None
    epochs: Count | None = None
    batch_size: Count | None = None
    steps: Count | None = None
    step_size: Positive | None = None
    eps: Positive | None = None
    temperature: Positive | None = None
    topk: Count | None = None
    phi: NonNegative | None = None
    momentum: Probability | None = None
    weight_decay: NonNegative | None = None
    max_grad_norm: NonNegative | None = None
    l1: NonNegative | None = None


class SweepEntry(_Section):
    """One entry of ``maintain.sweep``: a method, an optional name, optional full settings."""

    method: str
    name: str | None = None
    settings: MethodSettings | None = None


class Compose(_Section):
    """``maintain.compose``: interpolation points and the swapped head's fine-tuning."""

    enabled: bool | None = None
    alphas: list[OpenFraction] | None = None
    fine_tune_epochs: Annotated[int, Field(ge=0, strict=True)] | None = None
    fine_tune_lr: Positive | None = None
    forget_target: Literal["auto", "zero", "heldout"] | None = None
    forget_weight: NonNegative | None = None


class Reports(_Section):
    """The ``maintain.reports`` paths of a revision's reports."""

    metrics: str | None = None
    details: str | None = None
    tradeoff: str | None = None
    summary: str | None = None
    tradeoff_png: str | None = None
    validation: str | None = None


class MaintainSection(_Section):
    """The ``maintain`` section: what a revision runs, where it writes and how it selects."""

    dataset: str | None = None
    deployed: str | None = None
    request: str | None = None
    max_in_memory_mb: Positive | None = None
    sweep: list[SweepEntry] | None = None
    sweep_by_reason: dict[Literal[REASONS], list[SweepEntry] | None] | None = None  # type: ignore[valid-type]
    compose: Compose | None = None
    select_by: Literal["retain_test_acc", "test_acc", "retain_train_acc"] | None = None
    task_runner: Literal["threads", "dask"] | None = None
    max_workers: Count | None = None
    dask_address: str | None = None
    dask_workers: Count | None = None
    work_dir: str | None = None
    candidate_dir: str | None = None
    parity_atol: Positive | None = None
    reports: Reports | None = None


class RegistrySection(_Section):
    """The ``registry`` section: folders, git push and lock timeout (seconds)."""

    enabled: bool | None = None
    model: str | None = None
    models_dir: str | None = None
    records_dir: str | None = None
    push: bool | None = None
    lock_timeout: Positive | None = None


class PromotionSection(_Section):
    """The ``promotion`` section: automatic staging and the serving folder."""

    auto_staging: bool | None = None
    serving_dir: str | None = None


class LedgerSection(_Section):
    """The ``ledger`` section: the forget ledger's file."""

    enabled: bool | None = None
    path: str | None = None


class ScheduleSection(_Section):
    """The ``schedule`` section: cron expressions, time zone, concurrency and polling (s)."""

    maintenance_cron: str | None = None
    drift_cron: str | None = None
    timezone: str | None = None
    max_concurrent_runs: Count | None = None
    poll_seconds: Positive | None = None


class DriftSection(_Section):
    """The ``drift`` section: the incoming batch, the tests' settings and the rules' actions."""

    incoming: str | None = None
    max_images: Count | None = None
    alpha: OpenFraction | None = None
    permutations: Count | None = None
    seed: Seed | None = None
    report: str | None = None
    on_device_drift: Literal["deprecate_device", "notify_only"] | None = None
    on_embedding_drift: Literal["notify_only"] | None = None


class AuditSection(_Section):
    """The ``audit`` section: where ``medunlearn audit`` caches its reference models."""

    cache_dir: str | None = None  # medunlearn audit's reference-model cache


class Params(_Section):
    """A whole params file: every section optional, unknown sections refused."""

    data: DataSection | None = None
    train: TrainSection | None = None
    unlearn: UnlearnSection | None = None
    gates: GatesSection | None = None
    validation: ValidationSection | None = None
    maintain: MaintainSection | None = None
    registry: RegistrySection | None = None
    promotion: PromotionSection | None = None
    ledger: LedgerSection | None = None
    schedule: ScheduleSection | None = None
    drift: DriftSection | None = None
    audit: AuditSection | None = None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for suggesting a valid name)."""
    model: Any = Params
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X | None``, ``list[X]`` or ``dict[K, X]`` annotations."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function")))
    # pydantic puts the union/literal branch tried in the location; keep the params keys
    keys = [str(p) if not isinstance(p, int) else f"[{p}]" for p in loc]
    path = ".".join(keys).replace(".[", "[")
    if error["type"] == "extra_forbidden":
        holder = _model_at(loc)
        valid = list(holder.model_fields) if holder else []
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        kind = "section" if len(loc) == 1 else "key"
        hint = f"; did you mean '{near[0]}'?" if near else f"; valid: {', '.join(valid)}"
        return f"{path}: unknown {kind}{hint}"
    value = error.get("input")
    if loc and loc[-1] == "[key]":  # a mapping's key (a reason name), not a value
        return f"{path.removesuffix('[key]')}: unknown name; {error['msg'].lower()}"
    return f"{path}: {error['msg'].lower()} (got {value!r})"


def check_params(params: Any, path: str | Path = "params.yaml") -> Any:
    """Validate a whole params mapping against the schema and return it unchanged.

    Args:
        params: the loaded YAML (a mapping of sections).
        path: the file it came from, named in the error.

    Returns:
        ``params``, untouched (no defaults filled in).

    Raises:
        SettingsError: ``"<path>: <key.path>: <what is wrong>"`` for the first problem, then
            how many more there are; an unknown key or section names the nearest valid one.
    """
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise SettingsError(f"{path}: {first}{more}") from None
    return params


# --- settings applied to the whole process ------------------------------------------------
# Largest image any step decodes (``data.max_image_pixels``), checked on the file's header
# before any pixel is read: 10^8 pixels (a 10000 x 10000 export, 0.4 GB as float32) is far
# above any model input here and far below what exhausts memory.
MAX_IMAGE_PIXELS = 100_000_000
_max_image_pixels = MAX_IMAGE_PIXELS


def set_max_image_pixels(limit: int | None) -> int:
    """Set the largest image (width x height, pixels) any later decode accepts.

    The bound holds for the whole process: :func:`medunlearn.config.load_params` applies
    ``data.max_image_pixels`` (or :data:`MAX_IMAGE_PIXELS` when unset) each time a command
    loads its settings, so every step that opens images (prepare, validation, training,
    drift) obeys one bound without each passing it on.

    Args:
        limit: the bound in pixels, or ``None`` for :data:`MAX_IMAGE_PIXELS` (10^8).

    Returns:
        The bound now in force, in pixels.

    Raises:
        ValueError: ``limit`` is not a positive integer (a bool is refused too).
    """
    global _max_image_pixels
    limit = MAX_IMAGE_PIXELS if limit is None else limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"max_image_pixels must be a positive integer, not {limit!r}")
    _max_image_pixels = limit
    return limit


def max_image_pixels() -> int:
    """Return the bound in force, in pixels (see :func:`set_max_image_pixels`).

    Returns:
        The largest width x height a decode accepts.
    """
    return _max_image_pixels
