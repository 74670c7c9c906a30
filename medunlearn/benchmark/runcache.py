"""Finished benchmark runs on disk, so an interrupted benchmark resumes where it stopped.

A full scenario is hours of CPU (PneumoniaMNIST: about 70 method runs of minutes each);
a session ending mid-way must not throw the finished runs away. Each run's record (test
metrics, validation tuning gap, LiRA audit, cost) is stored as JSON under a key of
everything that decides it: the scenario's models (their bank keys: data, recipe, seeds,
training rows, training code), the request and non-member pool, the run's full resolved
settings and seed, and the hash of the core's code (``medunlearn/``; the decoders in
``medunlearn/data`` are covered by the pixels in the models' keys instead, see
``bank.py``), so any fix to a method or a metric recomputes every run. Writes are atomic
(temporary file, then rename). A diverged run is stored too, as ``{"diverged": true}``, so
it is not retried.

No library does this for us: joblib.Memory pickles (we never unpickle cache files) and keys
on function arguments, which here are models.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from medunlearn.models.bank import training_code_hash
from medunlearn.versioning import source_hash

# decoding and data sources: a run is keyed by the pixels they produced (bank.pixels_hash),
# so a change to how a file is read that gives the same pixels reuses the run
DECODING_SOURCES = ("data/decode.py", "data/sources.py", "data/demo.py")


def core_code_hash() -> str:
    """The hash of the core's code that a finished run depends on.

    The core's sources without the decoding (:data:`DECODING_SOURCES`), plus the training
    code hash (dataset class and augmentation). Forget requests and cohorts
    (``data/request.py``) are in it: they decide which rows a run forgets.

    Returns:
        :func:`medunlearn.versioning.source_hash` of the core followed by
        :func:`medunlearn.models.bank.training_code_hash` (hex digits).
    """
    return source_hash(exclude=DECODING_SOURCES) + training_code_hash()


class RunCache:
    """JSON records of finished runs under ``directory``, keyed by :meth:`key`.

    Args:
        directory: the folder of ``<key>.json`` records (created on the first :meth:`put`).
        context: everything the scenario's runs share (model bank keys, request, pool);
            the core's code hash (:func:`core_code_hash`) is added to it.
    """

    def __init__(self, directory: Path, context: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.context = {**context, "code": core_code_hash()}

    def key(self, method: str, config: dict[str, Any], seed: int) -> str:
        """The key of one run: its context, method, resolved settings and seed.

        Args:
            method: the method name (``medunlearn.unlearn.methods.METHODS``).
            config: the run's full resolved settings (JSON-ready; others via ``str``).
            seed: the run's seed.

        Returns:
            The first 24 hex digits of the SHA-256 of the sorted JSON of all four.
        """
        blob = {"context": self.context, "method": method, "config": config, "seed": seed}
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record of a run.

        Args:
            key: from :meth:`key`.

        Returns:
            The record, or ``None`` when absent or unreadable (then it is recomputed).
        """
        path = self.directory / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a run's record atomically (temporary file in the folder, then rename).

        Args:
            key: from :meth:`key`.
            record: the JSON-ready record (``{"diverged": true}`` for a diverged run).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, sort_keys=True)
            os.replace(tmp, self.directory / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
