"""Input augmentation shared by the adaptation methods (on by their `augment` setting).

Written as a handful of batched operations on the images' device, drawing from a generator on
that device: each operation is a kernel launch on a GPU, and a draw on the CPU copied over would
make every step wait for the host."""

from __future__ import annotations

import functools
import math
from typing import Any

# One row of uniform draws per image, mapped to these ranges: rotation angle (radians), scale,
# x and y shift (in grid units: fractions of half the image), inversion (only the sign counts),
# then a gain and an offset per channel.
ANGLE = math.radians(10)
SCALE = (0.9, 1.1)
SHIFT_PX = 2.0
GAIN = (0.5, 1.5)
OFFSET = 0.3
NOISE = 0.1


@functools.lru_cache(maxsize=32)
def _ranges(channels: int, size: int, device: Any) -> tuple[Any, Any, Any]:
    """(low, span) of each column of an image's draws, and the phase offsets that turn one angle
    into the rotation matrix's cos, -sin, sin and cos (cos(a + pi/2) = -sin a)."""
    import torch

    shift = 2.0 * SHIFT_PX / size
    low = [-ANGLE, SCALE[0], -shift, -shift, -1.0] + [GAIN[0]] * channels + [-OFFSET] * channels
    high = [ANGLE, SCALE[1], shift, shift, 1.0] + [GAIN[1]] * channels + [OFFSET] * channels
    lo = torch.tensor(low, device=device)
    span = torch.tensor(high, device=device) - lo
    phase = torch.tensor([0.0, math.pi / 2, -math.pi / 2, 0.0], device=device)
    return lo, span, phase


def augment(x: Any, generator: Any) -> Any:
    """Per-image random affine (rotation ±10°, scale 0.9-1.1, shift ±2 px), intensity gain and
    offset per channel, inversion (p = 0.5) and Gaussian noise (sigma 0.1), on images in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    n, c, h, _ = x.shape
    lo, span, phase = _ranges(c, h, x.device)
    r = torch.rand(n, 5 + 2 * c, generator=generator, device=generator.device)
    r = torch.addcmul(lo, r.to(x.device), span)  # every draw in its range, in one op
    angle, scale, shift, sign, gain, offset = r.split([1, 1, 2, 1, c, c], 1)
    # theta = [[cos a / s, -sin a / s, dx], [sin a / s, cos a / s, dy]]
    rotation = (angle + phase).cos_().div_(scale).view(n, 2, 2)
    theta = torch.cat([rotation, shift.view(n, 2, 1)], 2)
    grid = F.affine_grid(theta, [n, c, h, x.shape[-1]], align_corners=False)
    x = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros")  # pads with the image's black
    gain = torch.copysign(gain, sign).view(n, c, 1, 1)  # a negative gain inverts
    # (x - 1) * gain + offset: the shift back to [-1, 1] folded in
    x = torch.addcmul(offset.view(n, c, 1, 1) - gain, x, gain)
    noise = torch.randn(x.shape, generator=generator, device=generator.device)
    return x.add_(noise.to(x.device), alpha=NOISE).clamp_(-1.5, 1.5)
