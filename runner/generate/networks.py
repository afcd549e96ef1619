"""The PyTorch DCGAN tutorial's generator and discriminator, at 64x64 and scaled to 32 and 28.

At 64 the layers are the tutorial's exactly: a 4x4 seed doubled four times. Smaller images drop
doublings from the top (32: three from 4x4; 28: two from 7x7), so every layer keeps the
tutorial's kernel 4 / stride 2 / padding 1, its BN and activations, and its widths per depth.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def layout(size: int) -> tuple[int, int]:
    """(seed size, number of doublings) for an image `size`; 64 is the tutorial's (4, 4)."""
    for base in (4, 7):
        n, s = 0, base
        while s < size:
            s, n = s * 2, n + 1
        if s == size and n >= 1:
            return base, n
    raise ValueError(f"DCGAN needs an image size of 4 or 7 times a power of two (such as 28, 32, 64), not {size}")


def init_weights(module: nn.Module) -> None:
    """The tutorial's initialisation: conv weights N(0, 0.02), BN weights N(1, 0.02), BN bias 0."""
    name = type(module).__name__
    m: Any = module  # a layer with `weight` (and `bias`) tensors, by its name
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """Noise (and a one-hot label for a conditional model) -> images in [-1, 1]."""

    def __init__(self, size: int, channels: int, nz: int = 100, ngf: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        base, n = layout(size)
        self.nz, self.n_classes, self.size, self.channels = nz, n_classes, size, channels
        self.spec = {"size": size, "channels": channels, "nz": nz, "ngf": ngf, "n_classes": n_classes}
        width = ngf * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz + n_classes, width, base, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2)]
            layers.append(nn.ReLU(True))
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            # One-hot by comparison: F.one_hot reads the labels' range back to the host every call.
            one_hot = labels[:, None] == torch.arange(self.n_classes, device=labels.device)
            z = torch.cat([z, one_hot.to(z.dtype)], 1)
        return self.main(z[:, :, None, None])


class Discriminator(nn.Module):
    """Images -> a real/fake logit, and with `n_classes` also class logits (ACGAN's auxiliary head).

    Both heads give logits: the losses apply the sigmoid or softmax themselves, which is the
    numerically stable form (the tutorial's Sigmoid + BCELoss is the same function, less stable).
    """

    def __init__(self, size: int, channels: int, ndf: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        base, n = layout(size)
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(n - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2)]
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        self.trunk = nn.Sequential(*layers)
        self.adv = nn.Conv2d(width, 1, base, 1, 0, bias=False)
        self.aux = nn.Conv2d(width, n_classes, base, 1, 0) if n_classes else None
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.trunk(x)
        return self.adv(h).flatten(), (self.aux(h).flatten(1) if self.aux is not None else None)


class Sampler(nn.Module):
    """A trained generator as users call it: (noise, labels) -> images in [0, 1].

    This is the model a run logs to MLflow and `hw3 sample` loads back.
    """

    KIND = "hw3.sampler"  # the model format's name, in weights/spec.json

    def __init__(self, generator: Generator, classes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.generator = generator
        self.nz, self.n_classes = generator.nz, generator.n_classes
        self.classes = classes

    @property
    def hw3_spec(self) -> dict:
        """How to rebuild this model from its weights alone (a logged model's weights/spec.json)."""
        return {"kind": self.KIND, **self.generator.spec, "classes": list(self.classes)}

    @classmethod
    def from_spec(cls, spec: dict) -> Sampler:
        if spec.get("kind") != cls.KIND:
            raise ValueError(f"not a generator: {spec.get('kind')!r}")
        keys = ("size", "channels", "nz", "ngf", "n_classes")
        return cls(Generator(**{k: spec[k] for k in keys}), tuple(spec.get("classes", ())))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes and labels is None:  # noise alone (as MLflow's pyfunc calls it): cycle the labels
            labels = torch.arange(len(z), device=z.device) % self.n_classes
        return (self.generator(z, labels) + 1) / 2

    def noise(self, n: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, self.nz, generator=torch.Generator().manual_seed(seed)).to(device)
