"""The `Validator` contract: a score for a finished epoch of an adaptation run, from what the run
already has, that chooses settings and checkpoints without the target's labels.

A validator reads the source validation split's features, logits and labels and the target
validation split's features and logits (`ValidationData`); larger is better. One that also reads
the target's labels says so (`uses_target_labels = True`): it is an oracle, an upper bound that a
user without target labels does not have, and tables label it as such. Validators are registered
through `hw3_register_validators`, as methods are; the built-in ones live in
`runner.adapt.validators`. This module imports no torch, so `hw3 list` stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from runner.adapt.method import Outputs

# Validator names are parts of metric names (`validator/<name>`, `selected/<name>/...`), and
# `last` is the selection of the last epoch.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED = frozenset({"last"})


@dataclass(frozen=True)
class ValidationData:
    """What a validator scores: each validation split through the network its domain goes through
    (`Outputs`: features and logits, on the CPU), the source's labels, and the target's labels only
    for a validator that declares `uses_target_labels` (None for every other)."""

    source: Outputs
    source_labels: torch.Tensor
    target: Outputs
    target_labels: torch.Tensor | None
    seed: int = 0  # the run's seed, for a validator that draws (a subsample, a split)


class Validator:
    """Subclass this, set `name` and `description`, write `score`, and register an instance with
    `hw3_register_validators`. `score` returns a float, larger meaning better."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    uses_target_labels: ClassVar[bool] = False  # True: an oracle, labelled as one everywhere
    citation: ClassVar[str] = ""  # where the idea is from, as `hw3 list` shows it

    def score(self, data: ValidationData) -> float:
        raise NotImplementedError


def check_validator(obj: Any) -> str:
    """Why `obj` can't be registered as a validator, or '' when it can."""
    if isinstance(obj, type) and issubclass(obj, Validator):
        return f"register() got the class {obj.__name__}; register an instance: register({obj.__name__}())"
    if not isinstance(obj, Validator):
        return f"register() got {obj!r}, which is not an instance of runner.Validator"
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"validator {type(obj).__name__} needs a `name` of lower-case letters, digits and _ (got {name!r})"
    if name in RESERVED:
        return f"validator name '{name}' is reserved (selection of the last epoch); choose another"
    if type(obj).score is Validator.score:
        return f"validator '{name}' does not define score(data)"
    return ""
