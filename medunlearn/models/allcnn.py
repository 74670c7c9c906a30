"""All-CNN (Springenberg et al. 2015) with batch norm, as used by Boundary Unlearning.

Written by hand because neither torchvision nor MONAI ships it. The layout follows the
Boundary Unlearning / "Eternal Sunshine" reference (``filters_percentage`` there is ``width``
here); the final 8x8 average pool becomes an adaptive pool so 28- and 64-pixel inputs work,
and the 1x1 class convolution becomes the linear head (equivalent after global pooling).
"""

from __future__ import annotations

from torch import nn


def _conv(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int | None = None
) -> nn.Sequential:
    padding = kernel // 2 if padding is None else padding
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class AllCNNBody(nn.Module):
    """Nine conv blocks, two of them strided, then global average pooling and flatten.

    Each block is Conv2d (no bias) + BatchNorm2d + ReLU. Widths are ``max(8, 96 * width)``
    then ``max(16, 192 * width)`` channels; the two stride-2 blocks divide H and W by 4 in
    all.

    Args:
        in_channels: input channels (1 or 3).
        width: channel multiplier (``filters_percentage`` of the reference).
        dropout: dropout probability after each strided stage (0: none).
    """

    def __init__(self, in_channels: int, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        c1, c2 = max(8, int(96 * width)), max(16, int(192 * width))
        self.out_dim = c2
        self.layers = nn.Sequential(
            _conv(in_channels, c1),
            _conv(c1, c1),
            _conv(c1, c2, stride=2),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            _conv(c2, c2),
            _conv(c2, c2),
            _conv(c2, c2, stride=2),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            _conv(c2, c2),
            _conv(c2, c2, kernel=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        """Compute embeddings.

        Args:
            x: normalised images (N, C, H, W).

        Returns:
            Embeddings (N, ``out_dim``).
        """
        return self.layers(x)
