"""The shared input augmentation: drawn on the images' device from the method's own generator,
the same draws for the same generator state, and each image of a batched call augmented on its own."""

from __future__ import annotations

import torch

from runner.adapt.augmentation import augment


def images(n: int = 2000) -> torch.Tensor:
    return torch.rand(n, 3, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_the_same_generator_state_draws_the_same_augmentation() -> None:
    x = images(64)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    c = augment(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.5 and a.max() <= 1.5


def test_each_image_gets_its_own_transform_inverting_about_half() -> None:
    x = images()
    y = augment(x, torch.Generator().manual_seed(1))
    # An inverted image correlates negatively with its original; the others positively.
    xc, yc = x - x.mean((1, 2, 3), keepdim=True), y - y.mean((1, 2, 3), keepdim=True)
    inverted = ((xc * yc).mean((1, 2, 3)) < 0).float().mean().item()
    assert 0.45 < inverted < 0.55
    # The noise (sigma 0.1) and per-channel gains spread the values, but the range stays that of images.
    assert 0.4 < y.std().item() < 0.65


def test_a_geometric_transform_keeps_the_picture_recognisable() -> None:
    # A bright square in the middle stays near the middle (rotation <= 10 deg, shift <= 2 px).
    x = -torch.ones(200, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    y = augment(x, torch.Generator().manual_seed(2))
    centre = y[:, :, 11:17, 11:17].mean((1, 2, 3))
    corners = y[:, :, :4, :4].mean((1, 2, 3))
    # Inverted or not (then the square is the dark part), it stands out from the background.
    assert ((centre - corners).abs() > 0.5).float().mean().item() > 0.95


def test_a_generator_state_from_another_kind_of_device_reseeds_rather_than_failing() -> None:
    from runner.seeding import restore_generator

    g = torch.Generator().manual_seed(1)
    state, first = g.get_state(), torch.rand(3, generator=g)
    other = torch.Generator().manual_seed(9)
    restore_generator(other, state)  # same kind: exactly where it was
    assert torch.equal(torch.rand(3, generator=other), first)
    cuda_like = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state is 16 bytes
    restore_generator(other, cuda_like)
    again = torch.Generator()
    restore_generator(again, cuda_like)  # the same saved state, the same new stream
    assert torch.equal(torch.rand(3, generator=other), torch.rand(3, generator=again))
