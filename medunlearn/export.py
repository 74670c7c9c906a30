"""ONNX export of a revision, checked twice: by ``onnx.checker`` and by a parity run.

The exporter is torch's own (``torch.onnx.export(dynamo=True)``) with a dynamic batch
dimension and every weight inside the one file (``external_data=False``), so the file is the
whole revision. Metadata properties carry the revision id, request hash, data version and
metrics, so a deployed ONNX file says where it came from. Parity: onnxruntime and PyTorch
must agree on the validation images (max |logit difference| and identical labels), or the
export is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medunlearn.atomic import write_with


class ExportError(RuntimeError):
    """The exported model is invalid or disagrees with PyTorch."""


@dataclass
class Parity:
    n_images: int
    max_abs_diff: float
    labels_identical: bool
    atol: float

    @property
    def passed(self) -> bool:
        return self.labels_identical and self.max_abs_diff <= self.atol

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in metadata.items()
    }


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    example: torch.Tensor,
    metadata: dict[str, Any] | None = None,
    opset: int | None = None,
) -> Path:
    """Export ``model`` (CPU, eval, float32) to one ONNX file with a dynamic batch axis.

    ``example`` is a batch of at least 2 images of the model's input shape. The file is
    written atomically after ``onnx.checker`` accepts it.
    """
    import onnx

    model = model.cpu().float().eval()
    example = example.cpu().float()
    if example.ndim != 4 or len(example) < 2:
        raise ExportError("the export example must be a batch of at least 2 images (N, C, H, W)")
    batch = torch.export.Dim("batch", min=1, max=4096)
    kwargs: dict[str, Any] = {}
    if opset is not None:
        kwargs["opset_version"] = opset
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=({0: batch},),
        external_data=False,
        input_names=["images"],
        output_names=["logits"],
        verbose=False,
        **kwargs,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, _metadata_strings(metadata or {}))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the export: {exc}") from exc
    return write_with(path, lambda tmp: onnx.save_model(proto, str(tmp)))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def check_parity(
    model: torch.nn.Module,
    onnx_path: str | Path,
    images: Dataset,
    atol: float = 1e-4,
    batch_size: int = 128,
) -> Parity:
    """Run ``images`` through onnxruntime and PyTorch (CPU, float32) and compare logits."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model = model.cpu().float().eval()
    worst, same, n = 0.0, True, 0
    with torch.no_grad():
        for x, _ in DataLoader(images, batch_size=batch_size, shuffle=False):
            expected = model(x.float()).numpy()
            got = session.run(None, {name: x.float().numpy()})[0]
            worst = max(worst, float(np.abs(expected - got).max()))
            same = same and bool((expected.argmax(1) == got.argmax(1)).all())
            n += len(x)
    if n == 0:
        raise ExportError("parity check needs at least one image")
    return Parity(n_images=n, max_abs_diff=worst, labels_identical=same, atol=atol)
