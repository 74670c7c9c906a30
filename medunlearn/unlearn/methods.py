"""One registry of unlearning methods with one signature: ``METHODS[name](model, cohorts, cfg)``.

``cfg`` is a plain mapping (a section of ``params.yaml`` or a benchmark scenario); unknown
keys are an error, so a typo never silently falls back to a default. Every method returns a
new model in eval mode and leaves ``model`` untouched. Methods that make choices (PSG's
boundary search, composition's selected candidate) record them in ``model.unlearn_info``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any

import torch
from torch import nn

from medunlearn.data.request import Cohorts
from medunlearn.errors import Refusal
from medunlearn.evidence.metrics import accuracy_on
from medunlearn.models import build_model
from medunlearn.models.training import TrainConfig, train_classifier
from medunlearn.settings import REASONS
from medunlearn.unlearn import baselines
from medunlearn.unlearn.compose import fine_tune, interpolate, swap
from medunlearn.unlearn.psg import PSGConfig, psg_unlearn

Method = Callable[[nn.Module, Cohorts, Mapping[str, Any]], nn.Module]

# Boundary Shrink is PSG with one FGSM step and no pull-back or noise (Chen et al. 2023).
BOUNDARY_SHRINK = {"steps": 1, "step_size": 0.1, "eps": 0.1, "lam": 0.0, "gamma": 0.0}


class MethodConfigError(Refusal, ValueError):
    """A method's configuration names an unknown method or setting."""


class Diverged(RuntimeError):
    """A run's weights, buffers or outputs became NaN or inf: the run is rejected.

    It is reported as failed, never scored, cached, composed or exported.
    """


def non_finite_tensors(model: nn.Module) -> list[str]:
    """List the floating-point weights and buffers of ``model`` that hold NaN or inf.

    Args:
        model: the model to inspect.

    Returns:
        State-dict names, in state-dict order.
    """
    return [
        name
        for name, t in model.state_dict().items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite(model: nn.Module, what: str) -> None:
    """Refuse a model with NaN or inf weights or buffers.

    Args:
        model: the model to inspect.
        what: the run, named in the message (e.g. ``method 'psg'``).

    Raises:
        Diverged: naming ``what``, how many tensors and the first three.
    """
    bad = non_finite_tensors(model)
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise Diverged(f"{what} diverged: {len(bad)} non-finite tensor(s) ({shown})")


PROBE_IMAGES = 256  # per cohort: forget-train, retain-train and test


def check_outputs(model: nn.Module, cohorts: Cohorts, what: str) -> None:
    """Refuse a model that gives NaN or inf logits on probe images.

    Up to ``PROBE_IMAGES`` (256) images each of forget-train, retain-train and test are run
    in eval mode without gradients (the model's mode is restored). Finite weights can still
    overflow: a PSG run at lr 3e-3 on the demo kept every weight finite and gave NaN logits,
    which crashed evaluation (issue 26).

    Args:
        model: the model to probe.
        cohorts: the request's cohorts.
        what: the run, named in the message.

    Raises:
        Diverged: some probe image has a non-finite logit (counted).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bad = total = 0
    try:
        with torch.no_grad():
            for images in (cohorts.forget_train, cohorts.retain_train, cohorts.test):
                n = min(len(images), PROBE_IMAGES)
                if not n:
                    continue
                x = (
                    images.images[:n]
                    if images.in_memory
                    else torch.stack([images.image(i) for i in range(n)])
                ).to(device)
                logits = model(x).float()
                bad += int((~torch.isfinite(logits).all(dim=1)).sum())
                total += n
    finally:
        model.train(was_training)
    if bad:
        raise Diverged(f"{what} diverged: non-finite outputs on {bad} of {total} probe images")


def _keyword_defaults(fn: Callable) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }


def allowed_settings(name: str) -> set[str]:
    """List every setting a method accepts.

    Args:
        name: a key of :data:`METHODS`.

    Returns:
        ``PSGConfig`` fields for ``psg`` (less :data:`BOUNDARY_SHRINK` for
        ``boundary_shrink``), ``TrainConfig`` fields for ``retrain``,
        :data:`COMPOSE_DEFAULTS` keys for ``psg_compose``, else the baseline's keyword
        arguments.

    Raises:
        MethodConfigError: an unknown method.
    """
    if name not in METHODS:
        raise MethodConfigError(f"unknown method '{name}'; choose one of {sorted(METHODS)}")
    if name in ("psg", "boundary_shrink"):
        keys = {f.name for f in fields(PSGConfig)}
        return keys - set(BOUNDARY_SHRINK) if name == "boundary_shrink" else keys
    if name == "retrain":
        return {f.name for f in fields(TrainConfig)}
    if name == "psg_compose":
        return set(COMPOSE_DEFAULTS)
    return set(_keyword_defaults(BASELINE_FUNCTIONS[name]))


def check_settings(name: str, cfg: Mapping[str, Any]) -> None:
    """Refuse settings a method does not know, or values of the wrong type, before anything runs.

    Args:
        name: a key of :data:`METHODS`.
        cfg: the method's settings.

    Raises:
        MethodConfigError: an unknown method or setting, or a value of the wrong scalar type
            (all named).
        ValueError: a PSG setting outside its allowed values.
    """
    _check(name, cfg, allowed_settings(name))
    if name == "psg":
        psg_config(cfg)


def psg_base(unlearn_section: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``unlearn`` section without its ``by_reason`` overrides, validated.

    Args:
        unlearn_section: the ``unlearn`` section.

    Returns:
        A copy without ``by_reason``.

    Raises:
        MethodConfigError: an unknown setting or a value of the wrong type.
        ValueError: a setting outside its allowed values.
    """
    base = {k: v for k, v in unlearn_section.items() if k != "by_reason"}
    psg_config(base)
    return base


def setting_defaults(name: str) -> dict[str, Any]:
    """Return each setting of a method with its default (its type is the type a value must have).

    Args:
        name: a method name.

    Returns:
        Setting -> default; ``{}`` for a method without defaults or an unknown name.
    """
    if name in ("psg", "boundary_shrink"):
        return {f.name: f.default for f in fields(PSGConfig) if f.default is not MISSING}
    if name == "retrain":
        return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    if name == "psg_compose":
        return dict(COMPOSE_DEFAULTS)
    return _keyword_defaults(BASELINE_FUNCTIONS[name]) if name in BASELINE_FUNCTIONS else {}


def _check(name: str, cfg: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(cfg) - allowed
    if unknown:
        raise MethodConfigError(
            f"method '{name}': unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    _check_types(name, cfg)


def _check_types(name: str, cfg: Mapping[str, Any]) -> None:
    """Refuse a value of the wrong scalar type, naming the setting.

    PyYAML reads ``1e-5`` (no dot) as the *string* '1e-5': it would reach the optimiser as
    text and, as a sweep entry, differ from an identical float setting.
    """
    defaults = setting_defaults(name)
    for key, value in cfg.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "text"
        else:  # None, mappings and lists: checked by the method itself
            continue
        if not ok:
            hint = (
                " (YAML reads a number without a dot, like 1e-5, as text: write 1.0e-5)"
                if isinstance(value, str) and want == "a number"
                else ""
            )
            raise MethodConfigError(
                f"method '{name}': setting '{key}' must be {want}, got {value!r}{hint}"
            )


def _baseline(fn: Callable, name: str) -> Method:
    allowed = set(_keyword_defaults(fn))

    def run(model: nn.Module, cohorts: Cohorts, cfg: Mapping[str, Any]) -> nn.Module:
        _check(name, cfg, allowed)
        return fn(model, cohorts.forget_train, cohorts.retain_train, **cfg)

    run.__doc__ = fn.__doc__
    return run


def psg_config(cfg: Mapping[str, Any]) -> PSGConfig:
    """Validate PSG settings and build the config.

    Args:
        cfg: PSG settings (a subset of ``PSGConfig`` fields; ``by_reason`` is not one).

    Returns:
        The config.

    Raises:
        MethodConfigError: an unknown setting or a value of the wrong type.
        ValueError: a setting outside its allowed values.
    """
    _check("psg", cfg, {f.name for f in fields(PSGConfig)})
    return PSGConfig.from_params(dict(cfg))


def psg(model: nn.Module, cohorts: Cohorts, cfg: Mapping[str, Any]) -> nn.Module:
    """Run perturbed sign-gradient unlearning (:mod:`medunlearn.unlearn.psg`).

    The run's statistics (without its config) are recorded as ``unlearn_info`` on the
    returned model.

    Args:
        model: the deployed model (not modified).
        cohorts: the request's cohorts (forget-train, retain-train).
        cfg: ``PSGConfig`` fields.

    Returns:
        The unlearned model, in eval mode.

    Raises:
        MethodConfigError: an unknown setting or a value of the wrong type.
        ValueError: a setting outside its allowed values.
    """
    result = psg_unlearn(model, cohorts.forget_train, cohorts.retain_train, psg_config(cfg))
    result.model.unlearn_info = {k: v for k, v in result.stats.items() if k != "config"}
    return result.model


def boundary_shrink(model: nn.Module, cohorts: Cohorts, cfg: Mapping[str, Any]) -> nn.Module:
    """Run Boundary Shrink: PSG with ``BOUNDARY_SHRINK`` inner settings.

    Args:
        model: the deployed model (not modified).
        cohorts: the request's cohorts.
        cfg: the outer settings (PSG fields other than :data:`BOUNDARY_SHRINK`'s).

    Returns:
        The unlearned model, in eval mode.

    Raises:
        MethodConfigError: ``cfg`` sets one of the fixed inner settings, or an unknown one.
    """
    clash = set(cfg) & set(BOUNDARY_SHRINK)
    if clash:
        raise MethodConfigError(
            f"boundary_shrink fixes {sorted(clash)}; use method 'psg' to vary them"
        )
    return psg(model, cohorts, {**cfg, **BOUNDARY_SHRINK})


def retrain(model: nn.Module, cohorts: Cohorts, cfg: Mapping[str, Any]) -> nn.Module:
    """Retrain from fresh weights on retain-train: the gold standard.

    The same architecture, trained with the deployed model's recipe; the best epoch is
    chosen on retain-val (retain-train when retain-val is empty).

    Args:
        model: the deployed model (its ``config`` gives the architecture; not modified).
        cohorts: the request's cohorts.
        cfg: ``TrainConfig`` fields (the seed also seeds the initial weights).

    Returns:
        The retrained model, in eval mode.

    Raises:
        MethodConfigError: an unknown setting or a value of the wrong type.
        ValueError: an invalid recipe value.
    """
    _check("retrain", cfg, {f.name for f in fields(TrainConfig)})
    recipe = TrainConfig.from_params(dict(cfg))
    c = model.config
    fresh = build_model(
        c["name"],
        c["num_classes"],
        c["in_channels"],
        c["image_size"],
        seed=recipe.seed,
        **c["kwargs"],
    )
    val = cohorts.retain_val if len(cohorts.retain_val) else cohorts.retain_train
    return train_classifier(fresh, cohorts.retain_train, val, cohorts.class_names, recipe).model


COMPOSE_DEFAULTS: dict[str, Any] = {
    "psg": {},  # base PSG settings every sweep entry starts from
    "sweep": [{"lr": 3e-4}, {"lr": 1e-3}],  # overrides, one PSG run each
    "alphas": [0.25, 0.5, 0.75],  # interpolation points between best-retain and best-forget
    "fine_tune_epochs": 1,  # head fine-tuning of the swapped model on retain-train
    "fine_tune_lr": 1e-3,
    "forget_target": "auto",  # auto | zero | heldout
    "forget_weight": 1.0,
    "seed": 0,
}


def forget_target(reason: str, setting: str) -> str:
    """Choose the forget accuracy a good unlearned model shows, without a retrain reference.

    ``zero`` for class retirement (a retired class must not be predicted); ``heldout``
    otherwise: forget-train accuracy should equal accuracy on held-out rows of the same
    selector, i.e. the forgotten rows look like data the model never saw.

    Args:
        reason: the request's reason.
        setting: ``auto`` (by reason), ``zero`` or ``heldout``.

    Returns:
        ``zero`` or ``heldout``.

    Raises:
        MethodConfigError: an unknown setting.
    """
    if setting != "auto":
        if setting not in ("zero", "heldout"):
            raise MethodConfigError(f"forget_target must be auto, zero or heldout, not '{setting}'")
        return setting
    return "zero" if reason == "class_retirement" else "heldout"


def selection_score(
    model: nn.Module, cohorts: Cohorts, target: str, weight: float
) -> dict[str, float]:
    """Score a candidate on validation rows only (no test rows, no retrain model).

    ``score = retain-val accuracy - weight * |forget accuracy - goal|``. With ``zero``, the
    forget accuracy is on forget-val (forget-train when empty) and the goal 0; with
    ``heldout``, on forget-train, the goal being the accuracy on forget-val (retain-val
    when empty). An empty retain-val is replaced by retain-train.

    Args:
        model: the candidate.
        cohorts: the request's cohorts.
        target: ``zero`` or ``heldout`` (:func:`forget_target`).
        weight: weight of the forget distance.

    Returns:
        ``retain_val``, ``forget``, ``goal`` (accuracies in [0, 1]; 0 when undefined) and
        ``score``.
    """
    retain = accuracy_on(
        model, cohorts.retain_val if len(cohorts.retain_val) else cohorts.retain_train
    )
    if target == "zero":
        forget_set = cohorts.forget_val if len(cohorts.forget_val) else cohorts.forget_train
        forget, goal = accuracy_on(model, forget_set), 0.0
    else:
        forget = accuracy_on(model, cohorts.forget_train)
        heldout = cohorts.forget_val if len(cohorts.forget_val) else cohorts.retain_val
        goal = accuracy_on(model, heldout) if len(heldout) else 0.0
    distance = abs((forget or 0.0) - (goal or 0.0))
    return {
        "retain_val": retain or 0.0,
        "forget": forget or 0.0,
        "goal": goal or 0.0,
        "score": (retain or 0.0) - weight * distance,
    }


def psg_compose(model: nn.Module, cohorts: Cohorts, cfg: Mapping[str, Any]) -> nn.Module:
    """Run a small PSG sweep, then composition, then a validation-only choice.

    Candidates: every sweep run; ``swap`` (features of the run that retained best on
    retain-val + head of the run that forgot best), head fine-tuned on retain-train; and
    weight interpolations between those two runs at ``alphas`` (BN statistics recomputed on
    retain-train). The candidate with the best :func:`selection_score` wins; the choice and
    every score are recorded as ``unlearn_info``.

    Args:
        model: the deployed model (not modified).
        cohorts: the request's cohorts.
        cfg: :data:`COMPOSE_DEFAULTS` keys: ``psg`` (base settings), ``sweep`` (overrides,
            one run each), ``alphas``, ``fine_tune_epochs``, ``fine_tune_lr``,
            ``forget_target``, ``forget_weight``, ``seed``.

    Returns:
        The chosen candidate (a copy), in eval mode.

    Raises:
        MethodConfigError: an unknown setting, an empty sweep, or a bad ``forget_target``.
        ValueError: a PSG setting outside its allowed values.
    """
    _check("psg_compose", cfg, set(COMPOSE_DEFAULTS))
    c = {**COMPOSE_DEFAULTS, **cfg}
    target = forget_target(cohorts.request.reason, c["forget_target"])
    runs = []
    for i, override in enumerate(c["sweep"]):
        run_cfg = {**c["psg"], **override, "seed": c["seed"] + i}
        runs.append((f"psg[{i}]", psg(model, cohorts, run_cfg)))
    if not runs:
        raise MethodConfigError("psg_compose needs at least one sweep entry")
    scored = {name: selection_score(m, cohorts, target, c["forget_weight"]) for name, m in runs}
    by_name = dict(runs)
    best_retain = max(scored, key=lambda n: scored[n]["retain_val"])
    forget_key = (
        (lambda n: scored[n]["forget"])
        if target == "zero"
        else (lambda n: abs(scored[n]["forget"] - scored[n]["goal"]))
    )
    best_forget = min(scored, key=forget_key)
    candidates = dict(runs)
    if best_retain != best_forget:
        a, b = by_name[best_retain], by_name[best_forget]
        swapped = swap(a, b)
        if c["fine_tune_epochs"]:
            swapped = fine_tune(
                swapped,
                cohorts.retain_train,
                epochs=c["fine_tune_epochs"],
                lr=c["fine_tune_lr"],
                seed=c["seed"],
                augment=bool(c["psg"].get("augment", True)),
            )
        candidates["swap"] = swapped
        for alpha in c["alphas"]:
            candidates[f"interp[{alpha}]"] = interpolate(a, b, alpha, cohorts.retain_train)
    for name, m in candidates.items():
        if name not in scored:
            scored[name] = selection_score(m, cohorts, target, c["forget_weight"])
    chosen = max(scored, key=lambda n: scored[n]["score"])
    result = copy.deepcopy(candidates[chosen]).eval()
    result.unlearn_info = {
        "chosen": chosen,
        "target": target,
        "best_retain": best_retain,
        "best_forget": best_forget,
        "scores": {n: {k: round(v, 4) for k, v in s.items()} for n, s in scored.items()},
    }
    return result


BASELINE_FUNCTIONS: dict[str, Callable] = {
    "finetune": baselines.finetune,
    "l1_sparse": baselines.finetune,
    "neggrad_plus": baselines.neggrad_plus,
    "random_label": baselines.random_label,
    "boundary_expand": baselines.boundary_expand,
    "scrub": baselines.scrub,
    "salun": baselines.salun,
}

METHODS: dict[str, Method] = {
    "retrain": retrain,
    "finetune": _baseline(baselines.finetune, "finetune"),
    "l1_sparse": _baseline(baselines.finetune, "l1_sparse"),
    "neggrad_plus": _baseline(baselines.neggrad_plus, "neggrad_plus"),
    "random_label": _baseline(baselines.random_label, "random_label"),
    "boundary_shrink": boundary_shrink,
    "boundary_expand": _baseline(baselines.boundary_expand, "boundary_expand"),
    "scrub": _baseline(baselines.scrub, "scrub"),
    "salun": _baseline(baselines.salun, "salun"),
    "psg": psg,
    "psg_compose": psg_compose,
}

# Settings a method gets unless the caller overrides them (l1_sparse = finetune + l1 penalty).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "retrain": {},
    "finetune": {},
    "l1_sparse": {"l1": 1e-3},
    "neggrad_plus": {},
    "random_label": {},
    "boundary_shrink": {},
    "boundary_expand": {},
    "scrub": {},
    "salun": {},
    "psg": {},
    "psg_compose": {},
}


def run_method(
    name: str, model: nn.Module, cohorts: Cohorts, cfg: Mapping[str, Any] | None = None
) -> nn.Module:
    """Run ``METHODS[name]`` with the method's defaults under ``cfg``; ``model`` is not modified.

    Args:
        name: a key of :data:`METHODS`.
        model: the deployed model.
        cohorts: the request's cohorts.
        cfg: the method's settings (over :data:`METHOD_DEFAULTS`), or ``None``.

    Returns:
        The unlearned model, in eval mode, checked finite.

    Raises:
        MethodConfigError: an unknown method or setting.
        Diverged: the run's weights or buffers became NaN or inf, or its outputs on probe
            images did (:func:`check_outputs`).
        RuntimeError: the method modified the deployed model in place (a guard).
    """
    if name not in METHODS:
        raise MethodConfigError(f"unknown method '{name}'; choose one of {sorted(METHODS)}")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = METHODS[name](model, cohorts, {**METHOD_DEFAULTS[name], **(cfg or {})})
    after = model.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):  # pragma: no cover - guard
        raise RuntimeError(f"method '{name}' modified the deployed model in place")
    check_finite(result, f"method '{name}'")
    check_outputs(result, cohorts, f"method '{name}'")
    return result


def psg_settings(unlearn_section: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """Return the PSG settings for a request reason.

    The ``unlearn`` section of ``params.yaml`` with its ``by_reason[reason]`` overrides
    applied (the best measured config per reason), validated.

    Args:
        unlearn_section: the ``unlearn`` section.
        reason: the request's reason.

    Returns:
        The merged settings (without ``by_reason``).

    Raises:
        MethodConfigError: an unknown reason under ``by_reason``, an unknown setting or a
            value of the wrong type.
        ValueError: a setting outside its allowed values.
    """
    section = dict(unlearn_section)
    by_reason = section.pop("by_reason", None) or {}
    unknown = set(by_reason) - set(REASONS)
    if unknown:
        raise MethodConfigError(f"unlearn.by_reason: unknown reason(s) {sorted(unknown)}")
    settings = {**section, **(by_reason.get(reason) or {})}
    psg_config(settings)  # validate now, naming the bad key
    return settings
