"""Reading ``params.yaml``, the single source of settings, and hashing a section of it.

Each flow reads only its own section (the DVC convention), so a change to one section
re-runs only the stages that depend on it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from medunlearn.settings import ConfigError, check_params, set_max_image_pixels

DEFAULT_PARAMS = Path("params.yaml")


def project_root(params_path: str | Path = DEFAULT_PARAMS) -> Path:
    """The project a params file belongs to: the nearest folder, from the file's own upward,
    that holds both ``.git`` and ``.dvc`` (a medunlearn project); else the file's folder.

    The registry, the forget ledger and the project's salt live there, so
    ``--params examples/ham.params.yaml`` registers in the repository it is run from rather
    than finding no repository in ``examples/``.
    """
    folder = Path(params_path).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists() and (candidate / ".dvc").is_dir():
            return candidate
    return folder


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Load the whole params file as a dict, checked against the settings schema.

    Also applies ``data.max_image_pixels`` (the largest image any step decodes) to this
    process (``medunlearn.settings.set_max_image_pixels``).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping of sections.
        medunlearn.settings.SettingsError: an unknown section or key, or a value of the
            wrong type or out of range (named by its key path).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    params = check_params(params, path)
    set_max_image_pixels((params.get("data") or {}).get("max_image_pixels"))
    return params


def load_section(section: str, path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Load one section (``data``, ``train``, ...) of the params file."""
    params = load_params(path)
    if section not in params or not isinstance(params[section], dict):
        raise ConfigError(f"{path}: missing section '{section}'")
    return dict(params[section])


def params_hash(*sections: dict[str, Any]) -> str:
    """A short, order-independent hash of settings, recorded in every artifact."""
    blob = json.dumps(list(sections), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
