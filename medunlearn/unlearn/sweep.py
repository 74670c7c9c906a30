"""The maintenance sweep: which unlearning runs a revision tries, resolved and named.

An entry of ``maintain.sweep`` (or of ``maintain.sweep_by_reason[reason]``, added for that
reason only) is one of two kinds, and nothing else:

- ``{method: psg}`` (optionally ``name``): **inherits the reason's settings untouched**: for
  the PSG family (``psg``, ``boundary_shrink``) the ``unlearn`` section with its
  ``by_reason[reason]`` overrides (the best measured settings per reason), for every other
  method its defaults.
- ``{method: psg, settings: {lr: 0.0003, ...}}``: **names its full settings** on top of the
  method's base, the same for every reason: the ``unlearn`` section *without* ``by_reason``
  for the PSG family, the method's defaults otherwise. ``by_reason`` never leaks into it.

A name, when given, is the user's label; when omitted it is derived from what runs
(``psg``, ``psg[lr=0.0003]``). Loading refuses unknown keys, unknown settings, duplicate
names and two entries that resolve to the same settings for a reason (two names for one run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medunlearn.errors import Refusal
from medunlearn.evidence.gates import resolve_bounds
from medunlearn.settings import REASONS
from medunlearn.unlearn.methods import (
    BOUNDARY_SHRINK,
    METHOD_DEFAULTS,
    METHODS,
    MethodConfigError,
    check_settings,
    psg_base,
    psg_settings,
)

PSG_FAMILY = ("psg", "boundary_shrink")
ENTRY_KEYS = {"name", "method", "settings"}


class SweepError(Refusal, ValueError):
    """A sweep entry is malformed, ambiguous or a duplicate."""


def _base(method: str, unlearn: Mapping[str, Any], reason: str, inherit: bool) -> dict[str, Any]:
    if method not in PSG_FAMILY:
        return dict(METHOD_DEFAULTS[method])
    base = psg_settings(unlearn, reason) if inherit else psg_base(unlearn)
    if method == "boundary_shrink":
        base = {k: v for k, v in base.items() if k not in BOUNDARY_SHRINK}
    return base


def _label(method: str, settings: Mapping[str, Any]) -> str:
    if not settings:
        return method
    return f"{method}[{','.join(f'{k}={settings[k]}' for k in sorted(settings))}]"


def _run_key(config: Mapping[str, Any]) -> str:
    """What a run does, as text: numbers compared as numbers (``lr: 1`` is ``lr: 1.0``)."""

    def normal(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: normal(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [normal(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        return v

    return json.dumps(normal(config), sort_keys=True, default=str)


def sweep_configs(
    maintain: Mapping[str, Any], unlearn: Mapping[str, Any], reason: str
) -> list[dict[str, Any]]:
    """Resolve the sweep for ``reason`` (see the module docstring for the two kinds of entry).

    Args:
        maintain: the ``maintain`` section (``sweep``, ``sweep_by_reason``).
        unlearn: the ``unlearn`` section (PSG's settings and ``by_reason`` overrides).
        reason: the request's reason.

    Returns:
        ``[{"name": str, "config": {"method": str, **settings}}]``, in entry order:
        ``maintain.sweep`` first, then ``maintain.sweep_by_reason[reason]``.

    Raises:
        SweepError: no entry, or an entry that is not a mapping, has unknown keys, names an
            unknown method or setting, repeats a name, or resolves to another entry's
            settings; the message names the entry (``maintain.sweep[i]``).
        ValueError: a PSG-family setting outside its allowed values
            (:class:`~medunlearn.unlearn.psg.PSGConfig`).
    """
    extra = (maintain.get("sweep_by_reason") or {}).get(reason) or []
    entries = [(f"maintain.sweep[{i}]", e) for i, e in enumerate(maintain.get("sweep") or [])]
    entries += [(f"maintain.sweep_by_reason.{reason}[{i}]", e) for i, e in enumerate(extra)]
    if not entries:
        raise SweepError("maintain.sweep lists no runs")
    configs: list[dict[str, Any]] = []
    seen_names: dict[str, str] = {}
    seen_runs: dict[str, str] = {}
    for where, entry in entries:
        if not isinstance(entry, Mapping):
            raise SweepError(f"{where}: an entry is a mapping with 'method' (and 'settings')")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise SweepError(
                f"{where}: unknown key(s) {sorted(unknown)}; settings go under 'settings:'"
            )
        method = entry.get("method")
        if method not in METHODS:
            raise SweepError(f"{where}: unknown method {method!r}; choose from {sorted(METHODS)}")
        settings = dict(entry.get("settings") or {})
        inherit = "settings" not in entry
        try:
            config = {**_base(method, unlearn, reason, inherit), **settings}
            check_settings(method, config)
        except MethodConfigError as exc:
            raise SweepError(f"{where}: {exc}") from exc
        name = str(entry.get("name") or _label(method, settings))
        if name in seen_names:
            raise SweepError(f"{where}: duplicate name '{name}' (also {seen_names[name]})")
        run_key = _run_key({"method": method, **config})
        if run_key in seen_runs:
            raise SweepError(
                f"{where} ('{name}') resolves to the same settings as {seen_runs[run_key]} "
                f"for reason {reason}: one run under two names"
            )
        seen_names[name] = where
        seen_runs[run_key] = f"{where} ('{name}')"
        configs.append({"name": name, "config": {"method": method, **config}})
    return configs


def revision_sweep(
    maintain: Mapping[str, Any], unlearn: Mapping[str, Any], reasons: list[str]
) -> list[dict[str, Any]]:
    """Resolve the sweep of a revision that forgets requests of several ``reasons`` at once.

    The first reason's sweep, plus each other reason's runs that differ from every run
    already listed, named ``name@reason``. Why: a revision forgets the union, and a carried
    request is re-checked by its own gates, so the settings measured for its reason must be
    among the candidates (a device revision carrying a retired class cannot pass with retain
    fine-tuning alone). Only requests forgotten again are listed: one the starting model
    already forgot (inherited from the production parent) is re-checked, not unlearned, and
    adds no runs.

    Args:
        maintain: the ``maintain`` section.
        unlearn: the ``unlearn`` section.
        reasons: the new request's reason first, then each carried one's (non-empty).

    Returns:
        The runs, as :func:`sweep_configs` gives them.

    Raises:
        SweepError: an entry is wrong for one of the reasons.
        ValueError: a PSG-family setting outside its allowed values.
    """
    configs = sweep_configs(maintain, unlearn, reasons[0])
    runs = {_run_key(c["config"]) for c in configs}
    for reason in dict.fromkeys(reasons[1:]):
        if reason == reasons[0]:
            continue
        for c in sweep_configs(maintain, unlearn, reason):
            key = _run_key(c["config"])
            if key not in runs:
                runs.add(key)
                configs.append({"name": f"{c['name']}@{reason}", "config": c["config"]})
    return configs


def check_sweeps(
    maintain: Mapping[str, Any],
    unlearn: Mapping[str, Any],
    gates: Mapping[str, Any] | None = None,
) -> None:
    """Resolve the sweep and the gate bounds for every reason, before any run starts.

    Args:
        maintain: the ``maintain`` section.
        unlearn: the ``unlearn`` section.
        gates: the ``gates`` section, or ``None`` to skip the bounds.

    Raises:
        SweepError: an unknown reason under ``sweep_by_reason``, or a bad entry.
        medunlearn.evidence.gates.GateConfigError: an unknown reason or bound in ``gates``.
        ValueError: a PSG-family setting outside its allowed values.
    """
    if gates is not None:
        for reason in REASONS:
            resolve_bounds(reason, dict(gates))

    unknown = set(maintain.get("sweep_by_reason") or {}) - set(REASONS)
    if unknown:
        raise SweepError(f"maintain.sweep_by_reason: unknown reason(s) {sorted(unknown)}")
    for reason in REASONS:
        sweep_configs(maintain, unlearn, reason)
