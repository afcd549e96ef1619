"""The generative toolkit: what built-in and third-party GAN-style methods build on.

`GenerativeMethod` (with `GanConfig`) gives a method the DCGAN networks, optimizers, EMA,
per-epoch sample grids, loss curves, offline quality metrics (Fréchet distance and KID in the
features of a classifier trained on the run's data) and the logged `Sampler` that `hw3 sample`
draws from. Each name is imported from its module when first asked for, so a plugin that only
subclasses `GenerativeMethod` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.generate.method import GanConfig, GenerativeMethod
    from runner.generate.networks import Discriminator, Generator, Sampler, layout
    from runner.generate.quality import evaluator, features, frechet_distance, kernel_distance, label_accuracy
    from runner.generate.sampling import ImageSampler

_HOMES = {
    "GanConfig": "method",
    "GenerativeMethod": "method",
    "Discriminator": "networks",
    "Generator": "networks",
    "Sampler": "networks",
    "layout": "networks",
    "evaluator": "quality",
    "features": "quality",
    "frechet_distance": "quality",
    "kernel_distance": "quality",
    "label_accuracy": "quality",
    "ImageSampler": "sampling",
}
__all__ = [
    "Discriminator",
    "GanConfig",
    "GenerativeMethod",
    "Generator",
    "ImageSampler",
    "Sampler",
    "evaluator",
    "features",
    "frechet_distance",
    "kernel_distance",
    "label_accuracy",
    "layout",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runner.generate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"runner.generate.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
