"""The model zoo, selected by name in ``params.yaml``.

``allcnn``, ``resnet18``, ``densenet121``, ``efficientnet-b0`` (the last three from MONAI,
never pretrained: weights would need a download, and ImageNet features are not what a
clinical model was validated on).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from monai.networks.nets import DenseNet121, EfficientNet, resnet18
from monai.networks.nets.efficientnet import efficientnet_params
from torch import nn

from medunlearn.errors import Refusal
from medunlearn.models.allcnn import AllCNNBody
from medunlearn.models.base import ZooModel
from medunlearn.models.device import GLOBAL_RNG_LOCK


def _allcnn(
    in_channels: int, image_size: int, width: float = 1.0, dropout: float = 0.0
) -> tuple[nn.Module, int]:
    body = AllCNNBody(in_channels, width=width, dropout=dropout)
    return body, body.out_dim


def _resnet18(
    in_channels: int, image_size: int, stem: str = "auto", widen_factor: float = 1.0
) -> tuple[nn.Module, int]:
    """Build MONAI's ResNet-18 body; images of 32 px or less get the CIFAR stem.

    The CIFAR stem is 3x3, stride 1, no max-pool, as in the MedMNIST v2 baselines; otherwise
    28 px inputs shrink to 1 px by layer 3.
    """
    small = image_size <= 32 if stem == "auto" else stem == "small"
    net = resnet18(
        spatial_dims=2,
        n_input_channels=in_channels,
        num_classes=1,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=1 if small else 2,
        no_max_pool=small,
        widen_factor=widen_factor,
    )
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _densenet121(in_channels: int, image_size: int, stem: str = "auto") -> tuple[nn.Module, int]:
    """Build MONAI's DenseNet-121 body; small images get a 3x3 stride-1 stem without pooling.

    The ImageNet stem (/4) plus three transitions (/8) leaves nothing of a 28 px image.
    """
    net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1, pretrained=False)
    if (image_size <= 32) if stem == "auto" else stem == "small":
        width = net.features.conv0.out_channels
        net.features.conv0 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        net.features.pool0 = nn.Identity()
    dim = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()
    return net, dim


# EfficientNet-B0's block arguments, as in MONAI's EfficientNetBN.
_B0_BLOCKS = [
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
]


def _efficientnet_b0(in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    """Build MONAI's EfficientNet-B0 body, untrained, for the real image size.

    ``EfficientNetBN`` bakes its "same" padding for 224 px, which breaks on 28 px inputs, so
    the net is built from B0's arguments with the real image size (width/depth 1.0, dropout
    0.2, drop-connect 0.2 as in ``efficientnet_params``).
    """
    width, depth, _, dropout, drop_connect = efficientnet_params["efficientnet-b0"]
    net = EfficientNet(
        _B0_BLOCKS,
        spatial_dims=2,
        in_channels=in_channels,
        num_classes=1,
        width_coefficient=width,
        depth_coefficient=depth,
        dropout_rate=dropout,
        image_size=image_size,
        drop_connect_rate=drop_connect,
    )
    dim = net._fc.in_features
    net._fc = nn.Identity()
    return net, dim


class ModelError(Refusal, ValueError):
    """An unknown architecture or an option it does not take.

    The message names the key (``train.model``, ``train.model_kwargs``) and the nearest valid
    one.
    """


BODIES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "allcnn": _allcnn,
    "resnet18": _resnet18,
    "densenet121": _densenet121,
    "efficientnet-b0": _efficientnet_b0,
}


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    seed: int | None = None,
    **kwargs: Any,
) -> ZooModel:
    """Build a zoo model by name.

    With ``seed`` the initial weights depend on it alone (the global RNG is forked and left as
    it was, under :data:`~medunlearn.models.device.GLOBAL_RNG_LOCK`), so the same params give
    the same model whatever ran before. Without it they come from the global RNG.

    Args:
        name: ``allcnn``, ``resnet18``, ``densenet121`` or ``efficientnet-b0``.
        num_classes: number of output logits.
        in_channels: input channels (1 or 3).
        image_size: square input size, pixels (chooses the small-image stems).
        seed: seed of the initial weights, or ``None``.
        **kwargs: the architecture's options (e.g. ``width``, ``dropout``, ``stem``).

    Returns:
        The untrained model (identity normalisation), with ``config`` recording every
        argument but the seed.

    Raises:
        ModelError: an unknown architecture or option (the nearest valid one suggested), or
            an option value the architecture rejects.
    """
    if name not in BODIES:
        near = difflib.get_close_matches(str(name), list(BODIES), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ModelError(f"unknown model '{name}'{hint} (choose one of {sorted(BODIES)})")
    options = set(inspect.signature(BODIES[name]).parameters) - {"in_channels", "image_size"}
    for key in kwargs:
        if key not in options:
            near = difflib.get_close_matches(key, sorted(options), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ModelError(
                f"model_kwargs.{key}: not an option of '{name}'{hint} (options: "
                f"{', '.join(sorted(options)) or 'none'})"
            )
    lock = GLOBAL_RNG_LOCK if seed is not None else contextlib.nullcontext()
    with lock, torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            body, dim = BODIES[name](in_channels, image_size, **kwargs)
        except TypeError as exc:
            raise ModelError(f"model '{name}': bad option in {kwargs}: {exc}") from exc
        model = ZooModel(name, body, dim, num_classes, in_channels, {})
    model.config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "kwargs": dict(kwargs),
    }
    return model


def rebuild(config: dict[str, Any]) -> ZooModel:
    """Build an (untrained) model from the ``config`` a ``ZooModel`` carries.

    Args:
        config: ``name``, ``num_classes``, ``in_channels``, ``image_size`` and ``kwargs``.

    Returns:
        A model of the same architecture, with fresh weights.

    Raises:
        ModelError: the architecture or an option is unknown.
        KeyError: ``config`` lacks a required key.
    """
    return build_model(
        config["name"],
        config["num_classes"],
        config["in_channels"],
        config["image_size"],
        **config.get("kwargs", {}),
    )
