"""The names models pickled by hw3 0.1 refer to, in one place, and a pickle module that finds them.

hw3 0.1 logged its models with their classes under `plugins.methods`; those classes have since
moved into `runner.adapt` and `runner.generate`. Only the trusted-pickle path reads such a model
(`Tracker.load_model` with HW3_TRUST_PICKLES=1). This module is the pickle module it passes on
to torch.load (`pickle_module=runner.legacy`: `Unpickler`, `load`, `loads`), so no module is kept
under an old name just for them.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

# (old module, old name) -> where the object lives now, as "module.name".
MOVED: dict[tuple[str, str], str] = {
    ("plugins.methods.nets", "DigitClassifier"): "runner.adapt.networks.DigitClassifier",
    ("plugins.methods.nets", "FromUnitRange"): "runner.adapt.networks.FromUnitRange",
    ("plugins.methods.adda", "Composed"): "runner.adapt.networks.Composed",
    ("plugins.methods.gan_nets", "Generator"): "runner.generate.networks.Generator",
    ("plugins.methods.gan_nets", "Discriminator"): "runner.generate.networks.Discriminator",
    ("plugins.methods.gan_nets", "Sampler"): "runner.generate.networks.Sampler",
}


def current(module: str, name: str) -> tuple[str, str]:
    """Where `module.name` lives now: itself unless it is a legacy name."""
    moved = MOVED.get((module, name))
    if moved is None:
        return module, name
    new_module, _, new_name = moved.rpartition(".")
    return new_module, new_name


class Unpickler(pickle.Unpickler):
    """pickle's Unpickler, reading legacy names as the objects they became."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(*current(module, name))


def load(file: IO[bytes], **kwargs: Any) -> Any:
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, /, **kwargs: Any) -> Any:
    return Unpickler(io.BytesIO(data), **kwargs).load()
