"""The contract every model in the zoo keeps: ``features(x) -> embedding``, ``head(z) -> logits``.

Composition (feature extractor of one run + head of another) and drift detection (on
embeddings) rely on this split, so every architecture is wrapped the same way:

    ZooModel.norm        input normalisation, carried inside the model (pixels in [0, 1])
    ZooModel.body        backbone up to the pooled, flattened embedding
    ZooModel.classifier  the head (a linear layer)

State-dict keys therefore start with ``norm.``, ``body.`` or ``classifier.`` for every model,
which is what lets composition swap parts generically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics stored as buffers.

    Keeping this inside the model means unlearning can perturb raw [0, 1] pixels and the
    exported ONNX model takes the same [0, 1] input as the PyTorch one. Starts as the
    identity (mean 0, std 1).

    Args:
        channels: number of input channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def set_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the per-channel mean and standard deviation (pixel units, [0, 1] scale).

        Args:
            mean: one value per channel.
            std: one value per channel; values below 1e-6 are raised to 1e-6.

        Raises:
            ValueError: not one value per channel.
        """
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1).clamp_min(1e-6)
        if mean_t.shape != self.mean.shape or std_t.shape != self.std.shape:
            raise ValueError(f"expected {self.mean.shape[1]} channel statistics")
        self.mean.copy_(mean_t)
        self.std.copy_(std_t)

    def statistics(self) -> dict[str, list[float]]:
        """Return the statistics as JSON-ready lists (checkpoint metadata).

        Returns:
            ``{"mean": [C floats], "std": [C floats]}``.
        """
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise images.

        Args:
            x: images (N, C, H, W), pixels in [0, 1].

        Returns:
            ``(x - mean) / std``, same shape.
        """
        return (x - self.mean) / self.std


class ZooModel(nn.Module):
    """A classifier split into normalisation, feature body and linear head.

    Args:
        arch: the architecture's name (``allcnn``, ``resnet18``, ...).
        body: backbone from normalised images to pooled, flattened embeddings.
        embedding_dim: length of one embedding.
        num_classes: number of output logits.
        in_channels: input channels (1 or 3).
        config: everything :func:`medunlearn.models.build_model` needs to rebuild it.
    """

    def __init__(
        self,
        arch: str,
        body: nn.Module,
        embedding_dim: int,
        num_classes: int,
        in_channels: int,
        config: dict[str, Any],
    ):
        super().__init__()
        self.arch = arch
        self.config = dict(config)  # everything build_model needs to rebuild this model
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.norm = InputNormalization(in_channels)
        self.body = body
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Compute embeddings of images.

        Args:
            x: images (N, C, H, W), pixels in [0, 1] (normalised inside).

        Returns:
            Embeddings (N, embedding_dim).
        """
        return self.body(self.norm(x))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Compute logits from embeddings (the linear head).

        Args:
            z: embeddings (N, embedding_dim).

        Returns:
            Logits (N, num_classes).
        """
        return self.classifier(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify images: ``head(features(x))``.

        Args:
            x: images (N, C, H, W), pixels in [0, 1].

        Returns:
            Logits (N, num_classes).
        """
        return self.head(self.features(x))

    def feature_state(self) -> dict[str, torch.Tensor]:
        """Return the parameters and buffers of the feature part (normalisation + body).

        Returns:
            State-dict entries whose keys start with ``norm.`` or ``body.`` (tensors shared
            with the model, not copies).
        """
        return {k: v for k, v in self.state_dict().items() if not k.startswith("classifier.")}

    def head_state(self) -> dict[str, torch.Tensor]:
        """Return the parameters of the head.

        Returns:
            State-dict entries whose keys start with ``classifier.`` (shared, not copies).
        """
        return {k: v for k, v in self.state_dict().items() if k.startswith("classifier.")}
