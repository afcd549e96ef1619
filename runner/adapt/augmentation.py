"""Input augmentation shared by the adaptation methods (on by their `augment` setting)."""

from __future__ import annotations

import math
from typing import Any


def augment(x: Any, generator: Any) -> Any:
    """Per-image random affine (rotation ±10°, scale 0.9-1.1, shift ±2 px), intensity scale and
    offset per channel, inversion (p = 0.5) and Gaussian noise (sigma 0.1), on images in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    n, c, h, _ = x.shape
    dev = x.device

    def u(*shape: int, lo: float = -1.0, hi: float = 1.0) -> Any:
        return (torch.rand(*shape, generator=generator) * (hi - lo) + lo).to(dev)

    angle = u(n) * math.radians(10)
    scale = u(n, lo=0.9, hi=1.1)
    shift = u(n, 2) * (2.0 * 2 / h)
    theta = torch.stack(
        [
            torch.stack([torch.cos(angle) / scale, -torch.sin(angle) / scale, shift[:, 0]], 1),
            torch.stack([torch.sin(angle) / scale, torch.cos(angle) / scale, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pad with the image's black
    flip = torch.where(u(n, 1, 1, 1, lo=0, hi=1) < 0.5, -1.0, 1.0)
    x = x * flip * u(n, c, 1, 1, lo=0.5, hi=1.5) + u(n, c, 1, 1, lo=-0.3, hi=0.3)
    noise = torch.randn(x.shape, generator=generator).to(dev) * 0.1
    return (x + noise).clamp(-1.5, 1.5)
