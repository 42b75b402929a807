"""CIFAR-style bottleneck ResNets split for group knowledge transfer (He et al., NeurIPS 2020).

The client runs a ResNet-8: a 3x3 stem (conv to 16 channels, BatchNorm, ReLU) whose output is the feature map
``H``, one stage of two bottleneck blocks and a linear classifier on pooled features. The server runs the body of
a ResNet-56 or ResNet-110 (three stages of ``(depth - 2) / 9`` bottleneck blocks, widths 16/32/64, expansion 4,
strides 1/2/2, as in the FedGKT code and He et al. 2016) that takes ``H`` instead of the image: a client stem
followed by the server body is exactly the large network (:func:`full_model`).

Bottlenecks put their stride on the 3x3 convolution (as torchvision and the FedGKT code do) and shortcut with a
strided 1x1 convolution plus BatchNorm wherever the shape changes.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_fl.checks import check_int
from lightning_fl.exceptions import FederatedConfigError

EXPANSION = 4
STEM_WIDTH = 16


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand to ``planes * 4``, each with BatchNorm; ReLU after the sum.

    Args:
        in_planes: Input channels.
        planes: Width of the 3x3 convolution; the block outputs ``planes * 4`` channels.
        stride: Stride of the 3x3 convolution (and of the projection shortcut).

    Example:
        >>> Bottleneck(16, 16)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def resnet_stem(in_channels: int = 3, width: int = STEM_WIDTH) -> nn.Sequential:
    """The CIFAR stem: 3x3 conv (stride 1, no bias) to ``width`` channels, BatchNorm, ReLU. Its output is ``H``.

    Example:
        >>> resnet_stem(1)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """
    _positive("in_channels", in_channels)
    _positive("width", width)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    )


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_planes, planes, stride)]
    layers += [Bottleneck(planes * EXPANSION, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """Kaiming-normal (fan out) convolutions, BatchNorm 1/0; optionally zero the last BN of every residual branch."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


class ResNet8Client(nn.Module):
    """The FedGKT edge model: stem (``H``), one stage of two bottlenecks at width 16, global pooling, linear.

    ``forward`` returns ``(logits, H)``; ``H`` is what the client sends to the server. About 10.6K parameters for
    3 input channels and 10 classes.

    Args:
        in_channels: Image channels (1 for digits and MNIST, 3 for CIFAR).
        num_classes: Output classes.
        zero_init_residual: Start every residual branch at zero (its last BatchNorm scale is 0).

    Example:
        >>> logits, h = ResNet8Client(in_channels=1, num_classes=10)(torch.zeros(4, 1, 8, 8))
        >>> tuple(logits.shape), tuple(h.shape)
        ((4, 10), (4, 16, 8, 8))
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, zero_init_residual: bool = False) -> None:
        super().__init__()
        _positive("num_classes", num_classes)
        self.stem = resnet_stem(in_channels)
        self.layer1 = _stage(STEM_WIDTH, STEM_WIDTH, 2, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STEM_WIDTH * EXPANSION, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(x)
        out = self.avgpool(self.layer1(h)).flatten(1)
        return self.fc(out), h


class ResNetServerBody(nn.Module):
    """A CIFAR bottleneck ResNet of ``depth = 9 n + 2`` layers without its stem: it maps ``H`` to logits.

    Three stages of ``n`` bottlenecks (widths 16, 32, 64; strides 1, 2, 2; outputs 64, 128, 256 channels),
    global average pooling and a linear classifier. ``depth=56`` gives ResNet-56 (n = 6), ``depth=110``
    ResNet-110 (n = 12).

    Args:
        depth: Layers of the full network, counting the stem conv and the classifier: ``9 n + 2`` with n >= 1.
        num_classes: Output classes.
        in_channels: Channels of ``H`` (the client stem's width, 16).
        zero_init_residual: Start every residual branch at zero (its last BatchNorm scale is 0).

    Raises:
        FederatedConfigError: If ``depth`` is not ``9 n + 2``.

    Example:
        >>> ResNetServerBody(depth=56, num_classes=10)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, depth: int = 56, num_classes: int = 10, in_channels: int = STEM_WIDTH, zero_init_residual: bool = True
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
            raise FederatedConfigError(f"depth must be 9 n + 2 with n >= 1 (11, 20, ..., 56, 110), got {depth!r}")
        _positive("num_classes", num_classes)
        _positive("in_channels", in_channels)
        self.depth = depth
        n = (depth - 2) // 9
        self.layer1 = _stage(in_channels, 16, n, 1)
        self.layer2 = _stage(16 * EXPANSION, 32, n, 2)
        self.layer3 = _stage(32 * EXPANSION, 64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64 * EXPANSION, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(self.avgpool(out).flatten(1))


class FullResNet(nn.Module):
    """A stem followed by a server body: the large network, which FedAvg would train on every client.

    Example:
        >>> net = FullResNet(resnet_stem(1), ResNetServerBody(20, num_classes=10))
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, stem: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))


def full_model(stem: nn.Module, body: nn.Module) -> FullResNet:
    """Join ``stem`` and ``body`` (sharing, not copying, their parameters) into the large network.

    Example:
        >>> client, body = resnet8_client(1, 10), resnet56_body(10)
        >>> x = torch.randn(2, 1, 8, 8)
        >>> _ = client.eval(), body.eval()
        >>> torch.allclose(full_model(client.stem, body)(x), body(client(x)[1]))
        True
    """
    return FullResNet(stem, body)


def resnet8_client(in_channels: int = 3, num_classes: int = 10) -> ResNet8Client:
    """The FedGKT client model (see :class:`ResNet8Client`).

    Example:
        >>> sum(p.numel() for p in resnet8_client(3, 10).parameters())
        10586
    """
    return ResNet8Client(in_channels, num_classes)


def resnet56_body(num_classes: int = 10) -> ResNetServerBody:
    """The server body of ResNet-56 (18 bottlenecks).

    Example:
        >>> len(list(resnet56_body().modules())) > 100
        True
    """
    return ResNetServerBody(56, num_classes)


def resnet110_body(num_classes: int = 10) -> ResNetServerBody:
    """The server body of ResNet-110 (36 bottlenecks).

    Example:
        >>> resnet110_body(num_classes=100).fc.out_features
        100
    """
    return ResNetServerBody(110, num_classes)


def _positive(name: str, value: int) -> None:
    check_int(name, value, low=1)
