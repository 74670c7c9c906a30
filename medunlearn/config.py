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
    """Find the project a params file belongs to.

    The project is the nearest folder, from the file's own upward, that holds both ``.git``
    and ``.dvc`` (a medunlearn project); failing that, the file's own folder. The registry,
    the forget ledger and the project's salt live there, so
    ``--params examples/ham.params.yaml`` registers in the repository it is run from rather
    than finding no repository in ``examples/``.

    Args:
        params_path: the params file (need not exist; resolved to an absolute path).

    Returns:
        The project's root folder, absolute.
    """
    folder = Path(params_path).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists() and (candidate / ".dvc").is_dir():
            return candidate
    return folder


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Load the whole params file as a dict, checked against the settings schema.

    Also applies ``data.max_image_pixels`` (the largest image any step decodes) to this
    process (:func:`medunlearn.settings.set_max_image_pixels`).

    Args:
        path: the params file (``params.yaml`` by default, relative to the working folder).

    Returns:
        The sections as loaded (no defaults filled in); ``{}`` for an empty file.

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
    """Load one section (``data``, ``train``, ...) of the params file.

    Args:
        section: the section's name.
        path: the params file.

    Returns:
        A copy of the section's mapping.

    Raises:
        ConfigError: the file cannot be loaded, or lacks the section (or it is not a
            mapping).
        medunlearn.settings.SettingsError: the file fails the settings schema.
    """
    params = load_params(path)
    if section not in params or not isinstance(params[section], dict):
        raise ConfigError(f"{path}: missing section '{section}'")
    return dict(params[section])


def params_hash(*sections: dict[str, Any]) -> str:
    """Hash settings into a short, key-order-independent id recorded in every artifact.

    Args:
        *sections: the settings mappings, in a fixed order (their order matters, the order
            of keys inside each does not). Values JSON cannot encode are hashed as text.

    Returns:
        The first 16 hex digits of the SHA-256 of their sorted-key JSON.
    """
    blob = json.dumps(list(sections), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
