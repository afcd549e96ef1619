"""The generative toolkit: what built-in and third-party GAN-style methods build on.

`GenerativeMethod` (with `GanConfig`) gives a method the DCGAN networks, optimizers, EMA,
per-epoch sample grids, loss curves, offline quality metrics (Fréchet distance and KID in the
features of a classifier trained on the run's data) and the logged `Sampler` that `hw3 sample`
draws from. Each name is imported from its module when first asked for, so a plugin that only
subclasses `GenerativeMethod` loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.lazy import lazy_exports

if TYPE_CHECKING:
    from runner.generate.method import GanConfig, GenerativeMethod
    from runner.generate.networks import Discriminator, Generator, Sampler, layout
    from runner.generate.quality import evaluator, features, frechet_distance, kernel_distance, label_accuracy
    from runner.generate.sampling import ImageSampler

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


__getattr__, __dir__ = lazy_exports(globals())
