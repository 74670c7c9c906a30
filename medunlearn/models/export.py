"""ONNX export of a revision, checked twice: by ``onnx.checker`` and by a parity run.

The exporter is torch's own (``torch.onnx.export(dynamo=True)``) with a dynamic batch
dimension and every weight inside the one file (``external_data=False``), so the file is the
whole revision. Metadata properties carry the revision id, request hash, data version and
metrics, so a deployed ONNX file says where it came from. Parity: onnxruntime and PyTorch
must agree on the validation images (max |logit difference| and identical labels), or the
export is refused.

Graph templates (``graph_cache``). Tracing with ``torch.export`` costs 2-5 s per export for
the demo's CNN and 12.5-23 s for EfficientNet-B0 / DenseNet-121 on 2 CPU cores, and every
revision of a model has the same architecture: only its weights change. So an export
without the ONNX optimizer (``optimize=False``: every initializer is then a state-dict
tensor, byte for byte, which is checked before a template is stored; onnxruntime fuses
BatchNorm into the convolutions itself at load time) is kept as a template, keyed by
everything that shapes the graph (module tree, state-dict names/shapes/dtypes, input shape,
opset, the core's source hash and the torch / onnx / onnxscript / MONAI versions), and the
next export of that architecture copies the new weights into it. No library does this
weight swap; it is a few lines of ``onnx.numpy_helper``. The parity check after every
export stays the proof: a template that disagrees is discarded and the model re-exported
(:func:`export_checked`).

Fit to hand on. torch's exporter annotates every node with debugging metadata (its Python
stack trace, FX node and module names): 367 absolute source paths of the building machine
per demo file. They are removed (:func:`strip_build_annotations`) before the file is written
or kept as a template. What a serving team needs is added instead (:func:`serving_metadata`):
the registry version, the input contract (NCHW float32 pixels in [0, 1]; the normalisation
is inside the graph, its mean and std are stated) and the classes the revision retired.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medunlearn.atomic import write_with
from medunlearn.versioning import source_hash

TORCHVISION_NOTICE = "torch.onnx._internal.exporter._registration"


class ExportError(RuntimeError):
    """The exported model is invalid or disagrees with PyTorch."""


@dataclass
class Parity:
    """ONNX runtime vs PyTorch on the same images: largest logit difference and label agreement."""

    n_images: int
    max_abs_diff: float
    labels_identical: bool
    atol: float

    @property
    def passed(self) -> bool:
        """Whether labels agree everywhere and ``max_abs_diff <= atol`` (logit units)."""
        return self.labels_identical and self.max_abs_diff <= self.atol

    def to_dict(self) -> dict[str, Any]:
        """Return the check as a JSON-ready dict.

        Returns:
            Every field, plus ``passed``.
        """
        return {**asdict(self), "passed": self.passed}


def _metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in metadata.items()
    }


@dataclass
class Exported:
    """Where an export went, and whether its graph came from a template."""

    path: Path
    from_template: bool
    graph_key: str


def input_contract(input_shape: list[int], normalization: dict[str, list[float]]) -> dict:
    """Describe what the exported graph expects as input.

    Args:
        input_shape: (C, H, W) of one image, as the checkpoint records it.
        normalization: the model's per-channel ``mean`` and ``std`` (``ZooModel.norm``).

    Returns:
        The contract as a JSON-able dict: input name, layout, shape with a dynamic batch,
        dtype, pixel range and the normalisation the graph applies itself.
    """
    return {
        "name": "images",
        "layout": "NCHW",
        "shape": ["batch", *[int(v) for v in input_shape]],
        "dtype": "float32",
        "pixel_range": [0.0, 1.0],
        "normalisation": "applied inside the graph: (x - mean) / std per channel; "
        "feed [0, 1] pixels, not standardised ones",
        "mean": [float(v) for v in normalization.get("mean", [])],
        "std": [float(v) for v in normalization.get("std", [])],
        "output": "logits (batch, n_classes); class order as in class_names",
    }


def serving_metadata(
    meta: Any, version: str | None, retired_classes: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Build the metadata every exported file carries for its serving team.

    Args:
        meta: the model's ``CheckpointMeta`` (classes, input shape, normalisation).
        version: the registry version the file is registered as, or ``None`` (unregistered).
        retired_classes: class names whose training images the model was made to forget
            (still outputs of the graph: the head keeps its shape).

    Returns:
        ``registry_version``, ``class_names``, ``retired_classes`` and ``input``
        (:func:`input_contract`).
    """
    return {
        "registry_version": version or "unregistered",
        "class_names": [str(c) for c in meta.class_names],
        "retired_classes": [str(c) for c in retired_classes],
        "input": input_contract(meta.input_shape, meta.normalization),
    }


def strip_build_annotations(proto: Any) -> int:
    """Remove the exporter's debugging annotations, in place.

    Node metadata and doc strings of the graph, its subgraphs and functions (and value-info
    metadata) hold the building machine's source paths and stack traces. The graph's
    computation is untouched (names, attributes and initializers are kept).

    Args:
        proto: an ``onnx.ModelProto``, modified in place.

    Returns:
        How many annotations were removed (metadata entries and non-empty doc strings).
    """
    import onnx

    removed = 0

    def clean_graph(graph: Any) -> None:
        nonlocal removed
        removed += len(graph.metadata_props) + bool(graph.doc_string)
        del graph.metadata_props[:]
        graph.doc_string = ""
        for info in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
            if hasattr(info, "metadata_props"):
                removed += len(info.metadata_props)
                del info.metadata_props[:]
        clean_nodes(graph.node)

    def clean_nodes(nodes: Any) -> None:
        nonlocal removed
        for node in nodes:
            removed += len(node.metadata_props) + bool(node.doc_string)
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    clean_graph(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        clean_graph(sub)

    clean_graph(proto.graph)
    for function in proto.functions:
        removed += len(function.metadata_props) + bool(function.doc_string)
        del function.metadata_props[:]
        function.doc_string = ""
        clean_nodes(function.node)
    proto.doc_string = ""
    return removed


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    example: torch.Tensor,
    metadata: dict[str, Any] | None = None,
    opset: int | None = None,
    graph_cache: str | Path | None = None,
) -> Exported:
    """Export ``model`` (CPU, eval, float32) to one ONNX file with a dynamic batch axis.

    With ``graph_cache`` (a folder), the graph of an earlier export of the same architecture
    is reused with this model's weights (module docstring); a fresh trace is stored there
    when its initializers are exactly the state dict. Build annotations are stripped and
    ``metadata`` set as the model's properties. The file is written atomically after
    ``onnx.checker`` (``full_check``) accepts it. The model is moved to the CPU as float32
    in eval mode (in place).

    Args:
        model: the model to export.
        path: the ``.onnx`` file to write.
        example: a batch of at least 2 images of the model's input shape (N, C, H, W), [0, 1]
            pixels.
        metadata: properties to record; non-text values are stored as sorted JSON.
        opset: the ONNX opset (default: the exporter's).
        graph_cache: folder of graph templates, or ``None`` to always trace.

    Returns:
        Where the file went, whether its graph came from a template, and the graph's key.

    Raises:
        ExportError: a bad example, or ``onnx.checker`` rejects the export.
    """
    import onnx

    model = model.cpu().float().eval()
    example = example.cpu().float()
    if example.ndim != 4 or len(example) < 2:
        raise ExportError("the export example must be a batch of at least 2 images (N, C, H, W)")
    key = graph_key(model, example, opset)
    template = Path(graph_cache) / f"{key}.onnx" if graph_cache is not None else None
    proto = _from_template(template, model) if template is not None else None
    from_template = proto is not None
    if proto is None:
        proto = _trace(model, example, opset)
        if template is not None and _weights_are_initializers(proto, model):
            write_with(template, lambda tmp: onnx.save_model(proto, str(tmp)))
    strip_build_annotations(proto)  # also a template written before annotations were removed
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, _metadata_strings(metadata or {}))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the export: {exc}") from exc
    written = write_with(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    return Exported(written, from_template, key)


def graph_key(model: torch.nn.Module, example: torch.Tensor, opset: int | None = None) -> str:
    """Hash everything that shapes the exported graph but not the weights.

    That is the module's class and ``repr`` tree, the state-dict names, shapes and dtypes,
    the input's (C, H, W), the opset, the core's source hash and the torch, onnx, onnxscript
    and MONAI versions.

    Args:
        model: the model.
        example: an input batch (N, C, H, W); N is not part of the key.
        opset: the ONNX opset, or ``None``.

    Returns:
        The first 16 hex digits of the SHA-256.
    """
    import monai
    import onnx
    import onnxscript

    state = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    blob = json.dumps(
        {
            "module": f"{type(model).__module__}.{type(model).__qualname__}",
            "tree": repr(model),
            "state": state,
            "input": list(example.shape[1:]),
            "opset": opset,
            "core": source_hash(),
            "versions": [
                torch.__version__,
                onnx.__version__,
                onnxscript.__version__,
                monai.__version__,
            ],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _trace(model: torch.nn.Module, example: torch.Tensor, opset: int | None) -> Any:
    batch = torch.export.Dim("batch", min=1, max=4096)
    kwargs: dict[str, Any] = {}
    if opset is not None:
        kwargs["opset_version"] = opset
    # torch's exporter says, at every export, that torchvision's detection operators are
    # skipped (this package has none) and that a pytree API is deprecated: noise for a user
    logging.getLogger(TORCHVISION_NOTICE).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=False,
            optimize=False,  # keeps initializers = state-dict tensors (template swap)
            input_names=["images"],
            output_names=["logits"],
            verbose=False,
            **kwargs,
        )
    proto = program.model_proto
    strip_build_annotations(proto)
    return proto


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _weights_are_initializers(proto: Any, model: torch.nn.Module) -> bool:
    """True when every initializer is a state-dict tensor, byte for byte (nothing folded)."""
    from onnx import numpy_helper

    state = _state(model)
    for init in proto.graph.initializer:
        value = state.get(init.name)
        if value is None or not np.array_equal(numpy_helper.to_array(init), value):
            return False
    return True


def _from_template(template: Path, model: torch.nn.Module) -> Any | None:
    """The template's graph with ``model``'s weights, or ``None`` (absent or unusable)."""
    import onnx
    from onnx import numpy_helper

    if not template.is_file():
        return None
    try:
        proto = onnx.load(str(template), load_external_data=False)
    except Exception:  # a damaged cache file is a miss, never an error
        return None
    state = _state(model)
    for init in proto.graph.initializer:
        value = state.get(init.name)
        if value is None or list(value.shape) != list(init.dims):
            return None
        init.CopyFrom(numpy_helper.from_array(value, init.name))
    return proto


def export_checked(
    model: torch.nn.Module,
    path: str | Path,
    example: torch.Tensor,
    images: Dataset,
    metadata: dict[str, Any] | None = None,
    atol: float = 1e-4,
    graph_cache: str | Path | None = None,
) -> tuple[Exported, Parity]:
    """Export, then check parity on ``images``; a failing template is discarded and retraced.

    A graph template that fails the check is deleted and the model traced afresh, so a
    stale template never decides the result. The caller refuses the export when the
    returned parity did not pass.

    Args:
        model: the model to export.
        path: the ``.onnx`` file.
        example: a batch of at least 2 images (N, C, H, W), [0, 1] pixels.
        images: the images of the parity check (the validation split).
        metadata: properties to record in the file.
        atol: largest allowed |logit difference|.
        graph_cache: folder of graph templates, or ``None``.

    Returns:
        ``(exported, parity)``.

    Raises:
        ExportError: the export is invalid, or ``images`` is empty.
    """
    exported = export_onnx(model, path, example, metadata, graph_cache=graph_cache)
    parity = check_parity(model, exported.path, images, atol=atol)
    if exported.from_template and not parity.passed:
        Path(graph_cache, f"{exported.graph_key}.onnx").unlink(missing_ok=True)
        exported = export_onnx(model, path, example, metadata, graph_cache=graph_cache)
        parity = check_parity(model, exported.path, images, atol=atol)
    return exported, parity


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """Read the metadata properties of an ONNX file (weights are not loaded).

    Args:
        path: the ``.onnx`` file.

    Returns:
        Property name -> text value.
    """
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
    """Run ``images`` through onnxruntime and PyTorch (CPU, float32) and compare logits.

    Args:
        model: the PyTorch model (moved to the CPU as float32, eval mode, in place).
        onnx_path: the exported file.
        images: (image, label) pairs, images (C, H, W) in [0, 1].
        atol: largest allowed |logit difference|, recorded in the result.
        batch_size: images per run.

    Returns:
        The number of images, the largest |logit difference|, whether the arg-max labels
        agree for every image, and ``atol``.

    Raises:
        ExportError: ``images`` is empty.
    """
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
