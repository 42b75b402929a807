"""Small reference models, so configs and tests need no user code."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_fl.checks import check_fraction, check_int
from lightning_fl.exceptions import FederatedConfigError


class MLP(nn.Sequential):
    """Flatten, then Linear/ReLU layers: ``in_features -> *hidden -> num_classes``.

    Args:
        in_features: Input size after flattening (64 for 8x8 digits).
        hidden: Hidden layer widths.
        num_classes: Output classes.
        dropout: Dropout probability after every hidden layer (0 disables).

    Example:
        >>> import torch
        >>> MLP(64, [128], 10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_features: int = 64, hidden: Sequence[int] = (128,), num_classes: int = 10, dropout: float = 0.0
    ) -> None:
        _positive("in_features", in_features)
        _positive("num_classes", num_classes)
        for width in hidden:
            _positive("hidden", width)
        check_fraction("dropout", dropout, high_open=True)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """Two 3x3 conv blocks (Conv, BatchNorm, ReLU, 2x2 max-pool), then a linear classifier.

    Args:
        in_channels: Image channels (1 for digits and MNIST, 3 for CIFAR).
        num_classes: Output classes.
        image_size: Input height and width (8 for digits, 28 for MNIST, 32 for CIFAR); must be divisible by 4.
        channels: Filters of the two conv layers.

    Example:
        >>> import torch
        >>> SmallCNN(1, 10, image_size=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, channels: Sequence[int] = (32, 64)
    ) -> None:
        _positive("in_channels", in_channels)
        _positive("num_classes", num_classes)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4 or image_size % 4:
            raise FederatedConfigError(f"image_size must be a positive multiple of 4, got {image_size}")
        if len(channels) != 2:
            raise FederatedConfigError(f"channels must hold two widths, got {list(channels)}")
        for width in channels:
            _positive("channels", width)
        c1, c2 = channels
        super().__init__(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (image_size // 4) ** 2, num_classes),
        )


def _positive(name: str, value: int) -> None:
    check_int(name, value, low=1)
