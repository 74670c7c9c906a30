"""ONNX export: dynamic batch, metadata, checker, parity, graph templates, no build paths."""

from __future__ import annotations

import pytest
import torch

from medunlearn.models.export import check_parity, export_checked, export_onnx, read_onnx_metadata


def test_onnx_export_dynamic_batch_metadata_and_parity(tmp_path, demo_model, demo_splits) -> None:
    import onnxruntime as ort

    path = tmp_path / "m.onnx"
    example = demo_splits.val.all_images()[:2]
    export_onnx(demo_model, path, example, {"revision_id": "rev-x", "metrics": {"acc": 0.5}})
    props = read_onnx_metadata(path)
    assert props["revision_id"] == "rev-x" and props["metrics"] == '{"acc": 0.5}'
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):  # the batch axis is dynamic
        x = demo_splits.val.all_images()[:n]
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert out.shape == (n, 10)
    parity = check_parity(demo_model, path, demo_splits.val)
    assert parity.passed and parity.max_abs_diff < 1e-4 and parity.n_images == len(demo_splits.val)


def test_parity_catches_a_different_model(tmp_path, demo_model, demo_splits) -> None:
    import copy

    path = tmp_path / "m.onnx"
    export_onnx(demo_model, path, demo_splits.val.all_images()[:2])
    other = copy.deepcopy(demo_model)
    with torch.no_grad():
        other.classifier.bias.add_(0.5)
    parity = check_parity(other, path, demo_splits.val)
    assert not parity.passed and parity.max_abs_diff == pytest.approx(0.5, abs=1e-3)


def _ort_logits(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


def test_a_graph_template_carries_another_models_weights(tmp_path, demo_model, demo_splits):
    """The second export of an architecture reuses the first one's graph: its outputs are
    the second model's PyTorch logits (not the first model's) and a fresh trace's."""
    import copy

    images = demo_splits.val.all_images()[:64]
    cache = tmp_path / "graphs"
    first = export_onnx(demo_model, tmp_path / "a.onnx", images[:2], graph_cache=cache)
    assert not first.from_template and (cache / f"{first.graph_key}.onnx").is_file()
    other = copy.deepcopy(demo_model)
    torch.manual_seed(1)
    with torch.no_grad():  # every weight and BatchNorm statistic changes
        for name, value in other.state_dict().items():
            if name.endswith("running_var"):
                value.mul_(1.5)  # stays positive
            elif value.is_floating_point():
                value.add_(0.05 * torch.randn_like(value))
    second = export_onnx(
        other, tmp_path / "b.onnx", images[:2], {"revision_id": "rev-b"}, graph_cache=cache
    )
    assert second.from_template and second.graph_key == first.graph_key
    with torch.no_grad():
        want = other.eval()(images).numpy()
        old = demo_model.eval()(images).numpy()
    got = _ort_logits(second.path, images)
    assert abs(want - old).max() > 0.1  # the two models really differ
    assert abs(got - want).max() < 1e-4
    fresh = export_onnx(other, tmp_path / "c.onnx", images[:2])  # no cache: traced
    assert not fresh.from_template
    assert abs(_ort_logits(fresh.path, images) - got).max() < 1e-5
    assert read_onnx_metadata(second.path) == {"revision_id": "rev-b"}  # not the first's props


def test_a_template_that_disagrees_is_retraced_and_a_damaged_one_ignored(
    tmp_path, demo_model, demo_splits
):
    """A forward hook is invisible to the graph key (not in the module tree or the state
    dict): the template traced with it is wrong for the plain model. Parity catches that,
    and ``export_checked`` re-traces."""
    import copy

    example = demo_splits.val.all_images()[:2]
    cache = tmp_path / "graphs"
    hooked = copy.deepcopy(demo_model)
    hooked.register_forward_hook(lambda module, args, out: out + 0.5)
    export_onnx(hooked, tmp_path / "hooked.onnx", example, graph_cache=cache)
    stale = export_onnx(demo_model, tmp_path / "stale.onnx", example, graph_cache=cache)
    assert stale.from_template
    parity = check_parity(demo_model, stale.path, demo_splits.val)
    assert not parity.passed and parity.max_abs_diff == pytest.approx(0.5, abs=1e-3)
    exported, parity = export_checked(
        demo_model, tmp_path / "m.onnx", example, demo_splits.val, graph_cache=cache
    )
    assert parity.passed and not exported.from_template
    again = export_onnx(demo_model, tmp_path / "n.onnx", example, graph_cache=cache)
    assert again.from_template  # the re-trace replaced the stale template
    assert check_parity(demo_model, again.path, demo_splits.val).passed
    (cache / f"{again.graph_key}.onnx").write_bytes(b"not an onnx file")
    damaged = export_onnx(demo_model, tmp_path / "d.onnx", example, graph_cache=cache)
    assert not damaged.from_template
    assert check_parity(demo_model, damaged.path, demo_splits.val).passed


def test_exported_file_has_no_build_paths_and_states_its_contract(
    tmp_path, demo_model, demo_splits
) -> None:
    """torch's exporter writes its stack traces (this machine's source paths) into every
    node; the file handed on must carry none, and must say what input it expects."""
    import json
    import re
    from pathlib import Path

    import onnx

    import medunlearn
    from medunlearn.models.checkpoint import CheckpointMeta
    from medunlearn.models.export import serving_metadata

    meta = CheckpointMeta.for_model(demo_model, [str(i) for i in range(10)], 28)
    example = demo_splits.val.all_images()[:2]
    cache = tmp_path / "graphs"
    for name in ("traced.onnx", "templated.onnx"):  # the second reuses the first's graph
        path = tmp_path / name
        export_onnx(
            demo_model, path, example, serving_metadata(meta, "v1.2.0", ["3"]), graph_cache=cache
        )
        blob = path.read_bytes()
        source_root = str(Path(medunlearn.__file__).resolve().parent.parent).encode()
        assert source_root not in blob and b"site-packages" not in blob
        assert not re.search(rb"\.py\b", blob), "no Python source file named"
        proto = onnx.load(str(path))
        assert all(len(n.metadata_props) == 0 for n in proto.graph.node)
        props = read_onnx_metadata(path)
        assert props["registry_version"] == "v1.2.0"
        assert json.loads(props["retired_classes"]) == ["3"]
        contract = json.loads(props["input"])
        assert contract["shape"] == ["batch", 1, 28, 28] and contract["pixel_range"] == [0, 1]
        assert contract["mean"] == pytest.approx(demo_model.norm.mean.flatten().tolist())
        assert contract["std"] == pytest.approx(demo_model.norm.std.flatten().tolist())
        assert check_parity(demo_model, path, demo_splits.val).passed  # stripping kept the graph


def test_an_export_prints_no_library_noise(tmp_path) -> None:
    """torch's exporter logged, at every first export of a process, that torchvision's
    detection operators were skipped, and warned of a deprecated pytree API (issue 28
    review: the user's console). A fresh process exports; its stderr has neither."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from medunlearn.models.zoo import build_model\n"
        "from medunlearn.models.export import export_onnx\n"
        "torch.manual_seed(0)\n"
        "model = build_model('allcnn', num_classes=3, in_channels=1, image_size=28, width=0.125)\n"
        f"export_onnx(model.eval(), {str(tmp_path / 'm.onnx')!r}, torch.rand(2, 1, 28, 28), {{}})\n"
        "print('exported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "exported" in done.stdout, done.stderr[-2000:]
    assert "torchvision is not installed" not in done.stderr, done.stderr[-2000:]
    assert "LeafSpec" not in done.stderr, done.stderr[-2000:]
