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


# Strong augmentation (AdaMatch's and FixMatch's "strong" view, RandAugment-like): a larger
# affine with shear, then each of seven colour operations with probability STRONG_P, then one
# cutout square. Branch-free, as `augment`: an operation an image skips is blended in with weight
# 0, so every image of a batch runs the same kernels and no draw is read back to the host.
STRONG_ANGLE = math.radians(30)
STRONG_SCALE = (0.8, 1.2)
STRONG_SHEAR = 0.3
STRONG_SHIFT = 0.125  # of the image side
STRONG_P = 0.5
BRIGHTNESS = 0.5  # added, on [-1, 1] images
CONTRAST = (0.3, 1.7)
CUTOUT = (0.25, 0.5)  # the square's side, as a fraction of the image's
# Columns of one image's draws: angle, scale, shear, x/y shift, then, for the colour operations,
# one "apply" draw each (brightness, contrast, gain, solarize, posterize, autocontrast, grayscale,
# blur) and their magnitudes (brightness, contrast, solarize threshold, posterize levels), the
# inversion's sign, the cutout's centre (x, y) and side, then a gain per channel.
_STRONG_COLUMNS = 5 + 8 + 4 + 1 + 3


def strong_augment(x: Any, generator: Any) -> Any:
    """Per-image strong augmentation of images in [-1, 1] (returned in [-1, 1]): affine (rotation
    ±30°, scale 0.8-1.2, shear ±0.3, shift ±1/8 of the side), then brightness, contrast, colour
    gain per channel, solarize, posterize (2-5 bits), autocontrast, grayscale and blur each with
    p = 0.5, inversion with p = 0.5, and a cutout square of 1/4 to 1/2 the side filled with grey."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    r = torch.rand(n, _STRONG_COLUMNS + c, generator=generator, device=generator.device).to(x.device)
    geo, apply, mag, sign, cut, gain = r.split([5, 8, 4, 1, 3, c], 1)
    apply = (apply < STRONG_P).to(x.dtype)

    # Affine: [[cos a / s, (-sin a + k cos a) / s, dx], [sin a / s, (cos a + k sin a) / s, dy]], k the shear.
    angle = (geo[:, 0] * 2 - 1) * STRONG_ANGLE
    scale = STRONG_SCALE[0] + geo[:, 1] * (STRONG_SCALE[1] - STRONG_SCALE[0])
    shear = (geo[:, 2] * 2 - 1) * STRONG_SHEAR
    shift = (geo[:, 3:5] * 2 - 1) * (2 * STRONG_SHIFT)  # grid units: the side is 2
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, shift[:, 0] * scale], 1),
            torch.stack([sin, cos + shear * sin, shift[:, 1] * scale], 1),
        ],
        1,
    ) / scale.view(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    x = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pads with black

    def blend(i: int, changed: Any) -> Any:  # the operation's result where image i's draw applies it
        return torch.lerp(x, changed, apply[:, i].view(n, 1, 1, 1))

    x = blend(0, x + ((mag[:, 0] * 2 - 1) * BRIGHTNESS).view(n, 1, 1, 1))
    mean = x.mean((1, 2, 3), keepdim=True)
    factor = (CONTRAST[0] + mag[:, 1] * (CONTRAST[1] - CONTRAST[0])).view(n, 1, 1, 1)
    x = blend(1, torch.lerp(mean, x, factor))
    x = blend(2, x * (0.5 + gain).view(n, c, 1, 1))  # a gain of 0.5 to 1.5 per channel
    threshold = (mag[:, 2] * 2 - 1).view(n, 1, 1, 1)
    x = blend(3, torch.where(x > threshold, -x, x))  # solarize: invert above the threshold
    levels = (2 ** (2 + (mag[:, 3] * 4).floor().clamp_max(3)) - 1).view(n, 1, 1, 1)  # 2 to 5 bits
    x = blend(4, ((x.clamp(-1, 1) + 1) * 0.5 * levels).round() / levels * 2 - 1)
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    x = blend(5, (x - lo) / (hi - lo).clamp_min(1e-3) * 2 - 1)  # autocontrast, per channel
    x = blend(6, x.mean(1, keepdim=True).expand_as(x))  # grayscale
    x = blend(7, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))  # blur
    x = x * torch.where(sign < 0.5, -1.0, 1.0).view(n, 1, 1, 1).to(x.dtype)  # invert

    # Cutout: grey (0) inside a square of random side centred anywhere (it may leave the image).
    side = (CUTOUT[0] + cut[:, 2] * (CUTOUT[1] - CUTOUT[0])).view(n, 1, 1) * 0.5
    ys = torch.linspace(0, 1, h, device=x.device).view(1, h, 1)
    xs = torch.linspace(0, 1, w, device=x.device).view(1, 1, w)
    inside = ((ys - cut[:, 1].view(n, 1, 1)).abs() < side) & ((xs - cut[:, 0].view(n, 1, 1)).abs() < side)
    return x.clamp(-1, 1).masked_fill(inside.unsqueeze(1), 0.0)
