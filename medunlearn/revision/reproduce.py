"""``medunlearn reproduce MODEL VERSION``: re-run a revision from what it recorded.

The revision's commit (its GTO tag) is checked out in a scratch ``git worktree`` (never the
user's working tree), with the repository's DVC cache shared so the recorded data version
and the parent's files come from it (or from the remote). The recorded params sections are
written over that commit's ``params.yaml``, the registry and ledger are switched off (a
reproduction registers nothing), and ``dvc repro <stage> --single-item`` runs the stage
that made the revision: ``train`` for a trained model, ``maintain`` for an unlearning
revision, on the parent's checkpoint and the recorded request. Then each recorded metric is
compared with the reproduced one: they agree when ``|recorded - reproduced| <= tolerance``.
On the same hardware with the same seeds the run is deterministic and the tolerance is 0;
across CPUs, BLAS kernels may differ in the last bits (BENCHMARKS.md states what was
measured). The worktree is removed afterwards unless ``keep``.

Requests selected by identifiers are rebuilt from the ledger's tokens and the salt (raw ids
only in the scratch worktree's request file, deleted with it); earlier ledger requests the
revision kept are listed in that file under ``carried`` (forgotten again) and ``inherited``
(already forgotten by its parent, as the record's ``inherited`` says). Not reproducible (refused by
name): a request selected by identifiers that is not in the ledger (its record keeps only
their hashes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from medunlearn.data.manifest import read_manifest_csv
from medunlearn.revision.ledger import Ledger
from medunlearn.revision.registry import Registry, RegistryError
from medunlearn.revision.registry.git import _git

MAINTAIN_KEYS = (
    "forget_train_acc",
    "forget_heldout_acc",
    "retain_test_acc",
    "retain_test_balanced_acc",
    "test_acc",
)


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_STAGE", None)
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RegistryError(f"dvc {' '.join(args)} failed in {cwd}: {done.stderr[-1500:]}")
    return done.stdout


def compare_metrics(
    recorded: dict[str, Any], reproduced: dict[str, Any], tolerance: float
) -> list[dict]:
    """Compare recorded metrics with reproduced ones.

    Args:
        recorded: metric -> recorded value (non-numeric values and booleans are skipped).
        reproduced: metric -> reproduced value (a metric may be absent or None).
        tolerance: the largest absolute difference that still agrees, in the metric's own
            unit (accuracies and AUC in [0, 1]).

    Returns:
        one row per numeric metric of ``recorded``, in its order: ``metric``, ``recorded``,
        ``reproduced`` and ``agree`` (``|recorded - reproduced| <= tolerance``; False when
        not reproduced).
    """
    rows = []
    for key, value in recorded.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        again = reproduced.get(key)
        agree = again is not None and abs(float(value) - float(again)) <= tolerance
        rows.append({"metric": key, "recorded": value, "reproduced": again, "agree": agree})
    return rows


def reproduce(
    registry: Registry,
    name: str,
    version: str,
    tolerance: float = 0.0,
    keep: bool = False,
    ledger_path: str | Path | None = None,
) -> dict[str, Any]:
    """Re-run a revision in a scratch worktree and compare its metrics with the record.

    See the module docstring for what is run. Runs ``dvc repro`` (minutes: a training or a
    maintenance run).

    Args:
        registry: the registry holding the revision (its ``root`` is the repository).
        name: the model name.
        version: the version, ``vX.Y.Z``.
        tolerance: the largest absolute difference that still agrees (accuracies and AUC in
            [0, 1]; 0 on the same hardware and seeds).
        keep: keep the scratch worktree (its path is returned) instead of removing it.
        ledger_path: the forget ledger that rebuilds identifier requests (default:
            ``ledger/requests.jsonl`` under the registry root).

    Returns:
        ``model``, ``version``, ``commit`` (the version's tagged commit), ``stage`` (``train``
        or ``maintain``), ``tolerance``, ``agree`` (every row agrees and there is one),
        ``rows`` (:func:`compare_metrics`) and ``worktree`` (its path with ``keep``, else None).

    Raises:
        RegistryError: an unlearning revision without a parent; and, from the steps, an
            unknown version, a request not reproducible from the ledger, or a DVC command
            that failed (its stderr quoted).
    """
    record = registry.record(name, version)
    root = registry.root
    commit = _git(root, "rev-list", "-n", "1", f"{name}@{version}").strip()
    scratch = Path(tempfile.mkdtemp(prefix="medunlearn-reproduce-"))
    tree = scratch / "tree"
    _git(root, "worktree", "add", "--detach", str(tree), commit)
    try:
        _dvc(tree, "config", "--local", "cache.dir", str(root / ".dvc" / "cache"))
        params = yaml.safe_load((tree / "params.yaml").read_text()) or {}
        for section, values in (record.get("params") or {}).items():
            params[section] = values
        params.setdefault("registry", {})["enabled"] = False
        params.setdefault("ledger", {})["enabled"] = False
        if (tree / "data.dvc").is_file():
            _fetch(tree, "data.dvc")
        if record.get("kind") == "trained":
            stage, recorded = (
                "train",
                {k.removeprefix("test_"): v for k, v in (record.get("metrics") or {}).items()},
            )
        else:
            stage = "maintain"
            parent = record.get("parent")
            if not parent:
                raise RegistryError(f"not reproducible here: {name} {version} has no parent")
            parent_files = Path(registry.models_dir) / name / parent
            _fetch(tree, f"{parent_files}.dvc")
            request = request_file(
                record, lambda e: _raw_request(e, root, ledger_path, tree, params)
            )
            (tree / ".reproduce-request.yaml").write_text(yaml.safe_dump(request))
            params["maintain"].update(
                deployed=str(parent_files / "model.pt"),
                request=".reproduce-request.yaml",
                candidate_dir="models/candidate",
            )
            recorded = {k: (record.get("metrics") or {}).get(k) for k in MAINTAIN_KEYS}
            recorded["mia_auc"] = ((record.get("metrics") or {}).get("membership") or {}).get("auc")
        (tree / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _dvc(tree, "repro", stage, "--single-item", "--force")
        reproduced = _reproduced(tree, params, stage)
        rows = compare_metrics(recorded, reproduced, tolerance)
        return {
            "model": name,
            "version": version,
            "commit": commit,
            "stage": stage,
            "tolerance": tolerance,
            "agree": all(r["agree"] for r in rows) and bool(rows),
            "rows": rows,
            "worktree": str(tree) if keep else None,
        }
    finally:
        if not keep:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True
            )
            shutil.rmtree(scratch, ignore_errors=True)


def _fetch(tree: Path, dvc_file: str) -> None:
    try:
        _dvc(tree, "checkout", dvc_file)
    except RegistryError:
        _dvc(tree, "pull", dvc_file)


def request_file(
    record: dict[str, Any], raw: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """The request file that re-runs an unlearning revision from its ``record``.

    The record's last request is the one the revision was made for; the earlier ones are
    listed as the revision used them: those its parent had already forgotten (the record's
    ``inherited``) under ``inherited``, the others (forgotten again) under ``carried``. A
    record from before ``inherited`` existed forgot every earlier request again.

    Args:
        record: the revision's registry record (``requests``, optionally ``inherited``).
        raw: one recorded request entry as a request mapping with raw values.

    Returns:
        The request mapping to write as the reproduction's request file.

    Raises:
        RegistryError: the record lists no request.
    """
    requests = list(record.get("requests") or [])
    if not requests:
        raise RegistryError("not reproducible here: the revision records no request")
    *earlier, last = requests
    request = raw(last)
    inherited = set(record.get("inherited") or [])
    for key, chosen in (
        ("carried", [e for e in earlier if e.get("id") not in inherited]),
        ("inherited", [e for e in earlier if e.get("id") in inherited]),
    ):
        if chosen:
            request[key] = [raw(e) for e in chosen]
    return request


def _raw_request(
    entry: dict[str, Any], root: Path, ledger_path: str | Path | None, tree: Path, params: dict
) -> dict[str, Any]:
    """The recorded request with raw values (ids rebuilt from the ledger's tokens)."""
    selector = dict(entry.get("selector") or {})
    has_ids = any(k in selector for k in ("patient_ids", "image_ids"))
    base = {"reason": entry["reason"], "selector": selector}
    if entry.get("fraction") is not None:
        base["fraction"] = entry["fraction"]
    if entry.get("seed") is not None:
        base["seed"] = entry["seed"]
    if not has_ids:
        return base
    if not str(entry.get("id", "")).startswith("req-"):
        raise RegistryError(
            "not reproducible here: the request selects identifiers and is not in the "
            "ledger (its record keeps only their hashes)"
        )

    ledger = Ledger(Path(ledger_path) if ledger_path else root / "ledger" / "requests.jsonl")
    stored = next((e for e in ledger.entries() if e["id"] == entry["id"]), None)
    if stored is None:
        raise RegistryError(f"not reproducible here: request {entry['id']} not in {ledger.path}")
    manifest = read_manifest_csv(tree / params["maintain"]["dataset"] / "manifest.csv")
    request = ledger.request(stored, manifest)
    return {**base, "selector": request.selector, "seed": request.seed}


def _reproduced(tree: Path, params: dict[str, Any], stage: str) -> dict[str, Any]:
    if stage == "train":
        report = json.loads((tree / params["train"]["report"]).read_text())
        return dict(report.get("test") or {})
    reports = params["maintain"]["reports"]
    headline = Path(reports["metrics"])
    # the selected candidate's metrics are in the details file since the headline split;
    # a commit from before it wrote them into the metrics file itself
    candidates = [reports.get("details"), headline.with_name(f"{headline.stem}_details.json")]
    found = [tree / p for p in candidates if p and (tree / p).is_file()]
    metrics = json.loads((found[0] if found else tree / headline).read_text())
    selected = metrics.get("selected_metrics") or {}
    out = {k: selected.get(k) for k in MAINTAIN_KEYS}
    out["mia_auc"] = (selected.get("membership") or {}).get("auc")
    return out
