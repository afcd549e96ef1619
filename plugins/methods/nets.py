"""The DANN paper's digit networks (Ganin et al., JMLR 2016), shared by the adaptation methods.

"mnist" is the paper's MNIST -> MNIST-M network (28x28 inputs), "svhn" its SVHN-sized one
(32x32). Batch norm, which the paper's Caffe models lack, is on by default: it makes training
on two CPU cores converge in a few epochs; `batch_norm = false` gives the paper's exact layers.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn2d(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


def _bn1d(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm1d(c) if on else nn.Identity()


def features(arch: str, channels: int, batch_norm: bool = True) -> nn.Module:
    if arch == "mnist":
        return nn.Sequential(
            nn.Conv2d(channels, 32, 5),
            _bn2d(32, batch_norm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 5),
            _bn2d(48, batch_norm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
    if arch == "svhn":
        return nn.Sequential(
            nn.Conv2d(channels, 64, 5, padding=2),
            _bn2d(64, batch_norm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 64, 5, padding=2),
            _bn2d(64, batch_norm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 128, 5, padding=2),
            _bn2d(128, batch_norm),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
    raise ValueError(f"unknown architecture {arch!r}")


def label_head(arch: str, in_features: int, n_classes: int, batch_norm: bool = True) -> nn.Module:
    hidden = (100, 100) if arch == "mnist" else (3072, 2048)
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), _bn1d(width, batch_norm), nn.ReLU(inplace=True)]
        in_features = width
    if arch == "svhn":
        layers.insert(len(layers) - 3, nn.Dropout(0.5))  # the paper's SVHN head regularises its wide layers
    return nn.Sequential(*layers, nn.Linear(in_features, n_classes))


def feature_size(net: nn.Module, channels: int, size: int) -> int:
    with torch.no_grad():
        return int(net.eval()(torch.zeros(1, channels, size, size)).shape[1])


def pick_arch(arch: str, image_size: int) -> str:
    """`auto`: the paper's MNIST network below 32 pixels, its SVHN network from 32 up."""
    return ("svhn" if image_size >= 32 else "mnist") if arch == "auto" else arch


class FromUnitRange(nn.Module):
    """Takes images in [0, 1], as a logged model's users have them, and feeds [-1, 1] on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)
