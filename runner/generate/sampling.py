"""What `hw3 sample` needs of a generative run's logged model."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageSampler(Protocol):
    """What `hw3 sample` needs of a run's logged model (`runner.generate.Sampler` has it): noise
    of length `nz` (and, when `n_classes`, labels among `classes`) -> images in [0, 1]."""

    nz: int
    n_classes: int
    classes: tuple[str, ...]

    def noise(self, n: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor: ...

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor: ...
