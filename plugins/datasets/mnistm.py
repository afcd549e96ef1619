"""`mnistm`: MNIST-M made offline by Ganin & Lempitsky's recipe from the embedded MNIST digits.

Each digit is binarised and difference-blended, |patch - digit|, with a random 28x28 patch
of a colour photograph. The photographs are the two real ones that ship with scikit-learn
(the original used BSDS500). Deterministic: the same digits and seed give the same images.
"""

from __future__ import annotations

from typing import Any

from runner import DatasetSpec, Split, hookimpl
from runner.data import DataContext, load_dataset

RECIPE_SEED = 42


def backgrounds() -> list[Any]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # two uint8 (427, 640, 3) photographs


def blend(digits: Any, photos: list[Any], seed: int) -> Any:
    """uint8 (N, 1, H, W) digits -> uint8 (N, 3, H, W) MNIST-M images."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    n, _, h, w = digits.shape
    which = rng.integers(0, len(photos), n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    mask = (digits[:, 0].numpy() > 0)[..., None]  # binarised, as in the recipe
    for k, photo in enumerate(photos):
        idx = np.flatnonzero(which == k)
        top = rng.integers(0, photo.shape[0] - h, len(idx))
        left = rng.integers(0, photo.shape[1] - w, len(idx))
        rows = top[:, None, None] + np.arange(h)[None, :, None]
        cols = left[:, None, None] + np.arange(w)[None, None, :]
        patches = photo[rows, cols].astype(np.int16)  # (n_k, h, w, 3)
        out[idx] = np.abs(patches - 255 * mask[idx]).astype(np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def build(ctx: DataContext) -> dict[str, Split]:
    from plugins.datasets.mnist import MNIST

    mnist = load_dataset(MNIST, ctx)
    photos = backgrounds()
    return {
        name: Split(blend(split.images, photos, RECIPE_SEED + i), split.labels.clone())
        for i, (name, split) in enumerate(sorted(mnist.items()))
    }


def fingerprint(ctx: DataContext) -> str:
    from importlib import metadata

    from plugins.datasets.mnist import MNIST

    return f"{MNIST.fingerprint(ctx)}|sklearn-photos:{metadata.version('scikit-learn')}|seed{RECIPE_SEED}"


MNISTM = DatasetSpec(
    name="mnistm",
    description="MNIST-M: MNIST digits blended with colour photo patches (built offline)",
    channels=3,
    size=28,
    classes=tuple(str(d) for d in range(10)),
    build=build,
    fingerprint=fingerprint,
    origin=lambda ctx: "built from embedded mnist + scikit-learn photos",
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(MNISTM)
