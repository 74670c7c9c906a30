"""Model checkpoints: one file with the weights and the metadata needed to trust them.

The file is a plain dict of tensors and JSON-like values written with ``torch.save`` and read
with ``torch.load(weights_only=True)``, so loading never unpickles code. Metadata records
what a reviewer needs to reproduce or roll back a model: architecture, classes, input shape,
normalisation, the DVC version of the data, the params hash, metrics and creation time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from medunlearn.atomic import write_with
from medunlearn.errors import Refusal
from medunlearn.models import ZooModel, rebuild

CHECKPOINT_FORMAT = "medunlearn.models.checkpoint/1"


class CheckpointError(Refusal, ValueError):
    """A checkpoint file is missing, not ours, or does not match its architecture."""


@dataclass
class CheckpointMeta:
    """Everything about a model except its weights (JSON-serialisable)."""

    architecture: dict[str, Any]
    class_names: list[str]
    input_shape: list[int]
    normalization: dict[str, list[float]]
    data_version: str | None = None
    params_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # The training augmentation (flip, rotate_deg, shift): fine-tuning for unlearning reuses
    # it, so updates see images like those the model was trained on. None: not recorded.
    augmentation: dict[str, Any] | None = None
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(
        cls, model: ZooModel, class_names: list[str], image_size: int, **kwargs: Any
    ) -> CheckpointMeta:
        """Describe ``model``: architecture, classes, input shape and normalisation.

        Args:
            model: the zoo model (its ``config`` and normalisation statistics are read).
            class_names: the model's classes, in output order.
            image_size: square input size, pixels.
            **kwargs: further fields (``data_version``, ``params_hash``, ``metrics``,
                ``augmentation``, ``extra``, ...).

        Returns:
            The metadata, ``input_shape`` ``[C, image_size, image_size]``.
        """
        return cls(
            architecture=dict(model.config),
            class_names=list(class_names),
            input_shape=[model.in_channels, image_size, image_size],
            normalization=model.norm.statistics(),
            **kwargs,
        )


def save_checkpoint(path: str | Path, model: ZooModel, meta: CheckpointMeta) -> Path:
    """Write weights and metadata atomically (a crash leaves the previous file intact).

    Tensors are saved detached on the CPU; numpy values in the metadata become plain Python
    values (a JSON round trip), so ``torch.load(weights_only=True)`` reads the file back.

    Args:
        path: the ``.pt`` file.
        model: the model whose ``state_dict`` is saved.
        meta: its metadata; ``meta.architecture`` must equal ``model.config``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: the metadata's architecture is not the model's.
        TypeError: a metadata value is not JSON-like.
        OSError: the file cannot be written (naming it).
    """
    if meta.architecture != model.config:
        raise CheckpointError("metadata architecture does not match the model's config")
    # A JSON round trip turns numpy scalars and tuples into types weights_only=True accepts.
    metadata = json.loads(json.dumps(asdict(meta), default=_plain))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def read_metadata(path: str | Path) -> CheckpointMeta:
    """Read only the metadata (still a safe, weights-only load).

    Args:
        path: the checkpoint file.

    Returns:
        The metadata.

    Raises:
        CheckpointError: the file is missing, not a weights-only torch file, or not a
            medunlearn checkpoint.
    """
    return CheckpointMeta(**_load(path)["metadata"])


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[ZooModel, CheckpointMeta]:
    """Rebuild the model from its recorded architecture and load the weights strictly.

    The model comes back in eval mode, with the recorded training augmentation set as its
    ``train_augmentation`` attribute (reused by unlearning methods).

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (``torch.load``'s ``map_location``).

    Returns:
        ``(model, meta)``.

    Raises:
        CheckpointError: the file is missing, not a weights-only torch file, not a
            medunlearn checkpoint, or its weights do not fit the recorded architecture.
        medunlearn.models.zoo.ModelError: the recorded architecture is unknown here.
    """
    payload = _load(path, map_location)
    meta = CheckpointMeta(**payload["metadata"])
    model = rebuild(meta.architecture)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit {meta.architecture['name']}: {exc}"
        ) from exc
    model.eval()
    model.train_augmentation = meta.augmentation
    return model, meta


def _load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a pickle with code, a truncated file, not a torch file at all
        raise CheckpointError(  # torch's own text runs to many lines: its kind is enough
            f"{path}: not a loadable weights-only checkpoint (torch.load(weights_only=True) "
            f"refused it: {type(exc).__name__}; a pickle with code, a truncated file or not "
            "a torch file)"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    return payload


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-like")


def describe(meta: CheckpointMeta, path: str | Path = "") -> str:
    """Summarise a checkpoint's metadata for people (no patient data is stored there).

    Args:
        meta: the metadata.
        path: the file, named on the first line (optional).

    Returns:
        Three to five lines: model and input, data version and params hash, extras, and the
        test metrics when recorded (accuracies in [0, 1], 3 decimals).
    """
    arch = meta.architecture
    test = meta.metrics.get("test", {})
    lines = [
        f"checkpoint {path}".rstrip(),
        f"  model {arch['name']} {arch.get('kwargs') or ''}, input {meta.input_shape}, "
        f"{len(meta.class_names)} classes {meta.class_names}",
        f"  data version {meta.data_version}, params hash {meta.params_hash}, created {meta.created_at}",
    ]
    if meta.extra:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(meta.extra.items())))
    if test:
        auc = test.get("macro_auc")
        lines.append(
            f"  test accuracy {test['accuracy']:.3f}, balanced accuracy {test['balanced_accuracy']:.3f}, "
            f"macro AUC {'n/a' if auc is None else f'{auc:.3f}'} (n={test['n']})"
        )
    return "\n".join(lines)


def weights_sha256(path: str | Path) -> str:
    """Hash a checkpoint's weights alone (names, dtypes, shapes, values).

    Two trainings that produced the same model are recognised although their metadata
    (creation time) makes the files differ. bfloat16 tensors are hashed as float32 values.

    Args:
        path: the checkpoint file.

    Returns:
        The SHA-256 as 64 hex digits.

    Raises:
        CheckpointError: the file is missing or not a medunlearn checkpoint.
    """
    import hashlib

    state = _load(path)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        values = tensor.float() if tensor.dtype == torch.bfloat16 else tensor
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()
