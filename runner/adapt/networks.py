"""The DANN paper's digit networks (Ganin et al., JMLR 2016), shared by the adaptation methods.

"mnist" is the paper's MNIST -> MNIST-M network (28x28 inputs), "svhn" its SVHN-sized one
(32x32). Batch norm, which the paper's Caffe models lack, is on by default: it makes training
on two CPU cores converge in a few epochs; `batch_norm = false` gives the paper's exact layers.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn


def _bn2d(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


def _bn1d(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm1d(c) if on else nn.Identity()


def _drop2d(p: float) -> nn.Module:
    return nn.Dropout2d(p) if p > 0 else nn.Identity()


def features(arch: str, channels: int, batch_norm: bool = True, dropout: float = 0.0) -> nn.Module:
    """The convolutional feature extractor; `dropout` drops whole channels of the last convolution's
    output (Dropout2d) while training."""
    relu = nn.ReLU
    if arch == "mnist":
        return nn.Sequential(
            nn.Conv2d(channels, 32, 5), _bn2d(32, batch_norm), relu(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 5), _bn2d(48, batch_norm), _drop2d(dropout), relu(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
    if arch == "lenet":  # ADDA's digit encoder (Tzeng et al. 2017): LeNet's two convolutions
        return nn.Sequential(
            nn.Conv2d(channels, 20, 5), _bn2d(20, batch_norm), relu(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), _bn2d(50, batch_norm), _drop2d(dropout), relu(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
    if arch == "svhn":
        return nn.Sequential(
            nn.Conv2d(channels, 64, 5, padding=2), _bn2d(64, batch_norm), relu(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 64, 5, padding=2), _bn2d(64, batch_norm), relu(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 128, 5, padding=2), _bn2d(128, batch_norm), _drop2d(dropout), relu(inplace=True),
            nn.Flatten(),
        )  # fmt: skip
    raise ValueError(f"unknown architecture {arch!r}")


def label_head(arch: str, in_features: int, n_classes: int, batch_norm: bool = True) -> nn.Module:
    hidden = {"mnist": (100, 100), "lenet": (500,)}.get(arch, (3072, 2048))
    layers: list[nn.Module] = []
    for i, width in enumerate(hidden):
        if arch == "svhn" and i == 1:
            layers.append(nn.Dropout(0.5))  # the paper's SVHN head regularises its wide layers
        layers += [nn.Linear(in_features, width), _bn1d(width, batch_norm), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, n_classes))


@functools.lru_cache(maxsize=16)
def domain_labels(first: int, second: int, device: torch.device, first_label: float = 0.0) -> torch.Tensor:
    """A domain classifier's targets for a batch of `first` images of one domain then `second` of
    the other: `first_label` then 1 - `first_label`, made once per shape and device (each step
    would otherwise spend four ops on it). Shared: never change it in place."""
    with torch.inference_mode(False):  # made first under inference mode, it could not be saved for backward
        return torch.cat([torch.full((first,), first_label), torch.full((second,), 1.0 - first_label)]).to(device)


def domain_head(arch: str, in_features: int, norm: str = "bn", hidden: int = 0) -> nn.Module:
    """The domain classifier: the paper's 100 -> 1 (MNIST) or 1024 -> 1024 -> 1 (SVHN) layers, or
    two hidden layers of `hidden` units.

    `norm` is what follows each hidden layer: "bn", "dropout" (p = 0.5) or "none".
    """
    widths = (hidden, hidden) if hidden else {"mnist": (100,), "lenet": (500, 500)}.get(arch, (1024, 1024))
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width)]
        if norm == "bn":
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU(inplace=True))
        if norm == "dropout":
            layers.append(nn.Dropout(0.5))
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, 1))


def feature_size(net: nn.Module, channels: int, size: int) -> int:
    with torch.no_grad():
        return int(net.eval()(torch.zeros(1, channels, size, size)).shape[1])


def pick_arch(arch: str, image_size: int) -> str:
    """`auto`: the paper's MNIST network below 32 pixels, its SVHN network from 32 up."""
    return ("svhn" if image_size >= 32 else "mnist") if arch == "auto" else arch


class DigitClassifier(nn.Module):
    """A feature extractor and a label head; `features` is what adaptation aligns."""

    def __init__(
        self, arch: str, channels: int, size: int, n_classes: int, batch_norm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.arch = arch
        # What rebuilds this network from its state dict alone (a logged model's weights/spec.json).
        self.spec = {
            "arch": arch,
            "channels": channels,
            "size": size,
            "n_classes": n_classes,
            "batch_norm": batch_norm,
            "dropout": dropout,
        }
        self.features = features(arch, channels, batch_norm, dropout)
        self.feature_dim = feature_size(self.features, channels, size)
        self.head = label_head(arch, self.feature_dim, n_classes, batch_norm)
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Composed(nn.Module):
    """A feature extractor and a label head from different networks, as one classifier (ADDA's
    target encoder with the source network's head)."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FromUnitRange(nn.Module):
    """Takes images in [0, 1], as a logged model's users have them, and feeds [-1, 1] on."""

    KIND = "hw3.digit_classifier"  # the model format's name, in weights/spec.json

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def hw3_spec(self) -> dict | None:
        """How to rebuild this model from its weights alone, when it wraps a `DigitClassifier`."""
        spec = getattr(self.net, "spec", None)
        return {"kind": self.KIND, **spec} if isinstance(self.net, DigitClassifier) and spec else None

    @classmethod
    def from_spec(cls, spec: dict) -> FromUnitRange:
        if spec.get("kind") != cls.KIND:
            raise ValueError(f"not a digit classifier: {spec.get('kind')!r}")
        keys = ("arch", "channels", "size", "n_classes", "batch_norm", "dropout")
        return cls(DigitClassifier(**{k: spec[k] for k in keys}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the label head sees, for t-SNE and distances between domains."""
        net: Any = self.net  # a DigitClassifier, or any classifier with `features` and `head`
        return net.features(x * 2.0 - 1.0)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -lam backward (Ganin & Lempitsky's GRL)."""
    return _GradReverse.apply(x, lam)
