"""Image classifiers for downstream evaluation: a small CNN and a ResNet-18, by name.

They judge synthetic data (the augmentation experiment, classification accuracy score), so they are plain and
standard rather than tuned: any channel count, ``num_classes`` logits, images of 16-128 px. Each exposes
``cam_layer``, the last convolutional block, for Grad-CAM (:mod:`synthmed.viz.saliency`).

>>> net = build_classifier("resnet18", in_channels=1, num_classes=2, image_size=28)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from synthmed.errors import ConfigError


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks (32, 64, 128 channels; BatchNorm, ReLU; max-pool after the first two), global
    average pooling, dropout and a linear layer: about 0.1 M parameters, about 1 s per epoch of BreastMNIST's 546
    training images (28 px) on two idle CPU cores."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.25) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.block1 = block(in_channels, width)
        self.block2 = block(width, 2 * width)
        self.block3 = block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(4 * width, num_classes))

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional block (Grad-CAM's usual choice: the finest map with the most semantics)."""
        return self.block3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        return self.head(self.block3(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016), a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _stem(in_channels: int, width: int, image_size: int) -> nn.Sequential:
    """The input stem, by image size.

    Up to 32 px: one 3x3 stride-1 convolution and no max-pool, as the MedMNIST v2 baselines use for 28 px (the
    ImageNet stem would shrink 28 px to 7 px before the first block). 33-64 px: the same plus a 2x2 max-pool.
    Larger: the ImageNet stem (7x7 stride 2, 3x3 max-pool stride 2).
    """
    if image_size <= 64:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        if image_size > 32:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)
    return nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


class ResNet18(nn.Module):
    """ResNet-18: BasicBlocks [2, 2, 2, 2] of ``width``, 2x, 4x, 8x channels, global average pooling, linear."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        self.stem = _stem(in_channels, width, image_size)
        stages = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def cam_layer(self) -> nn.Module:
        """The last residual stage (``layer4``), the layer Grad-CAM uses for ResNets."""
        return self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(x)


ClassifierFactory = Callable[[int, int, int], nn.Module]

CLASSIFIERS: dict[str, ClassifierFactory] = {
    "cnn": lambda in_channels, num_classes, image_size: SmallCNN(in_channels, num_classes),
    "resnet18": lambda in_channels, num_classes, image_size: ResNet18(in_channels, num_classes, image_size),
}


def build_classifier(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised classifier from :data:`CLASSIFIERS` (initialised from the global torch RNG).

    Args:
        name: ``"cnn"`` (:class:`SmallCNN`) or ``"resnet18"`` (:class:`ResNet18`).
        in_channels: Image channels.
        num_classes: Number of classes (logits).
        image_size: Side of the (square) input images; picks the ResNet stem.
    """
    if name not in CLASSIFIERS:
        raise ConfigError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    if in_channels < 1 or num_classes < 2 or image_size < 8:
        raise ConfigError(f"a classifier needs >= 1 channel, >= 2 classes and images of >= 8 px "
                          f"(got {in_channels}, {num_classes}, {image_size})")
    return CLASSIFIERS[name](in_channels, num_classes, image_size)
