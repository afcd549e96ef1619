"""The `Validator` contract: a score that chooses settings and checkpoints without the target's
labels, from what an adaptation run already has.

Two kinds, both registered through `hw3_register_validators`, as methods are:

- A `Validator` scores one finished epoch on its own (`score(ValidationData) -> float`): the
  source validation split's features, logits, labels and images, the target validation split's
  features, logits and images. Every adaptation run logs it each epoch (`validator/<name>`).
- A `StudyValidator` scores a set of candidates against each other
  (`score_candidates(list[Candidate]) -> list[float]`), such as EnsV, which rates each by its
  agreement with the ensemble of all: there is no score of one candidate alone, so nothing per
  epoch. A run scores its epochs with it once at the end, and `hw3 tune` the finished trials of
  a study (each at its last epoch), from the target validation predictions every run saves.

Larger is better for both. One that also reads the target's labels says so
(`uses_target_labels = True`): it is an oracle, an upper bound that a user without target labels
does not have, and tables label it as such. The built-in ones live in `runner.adapt.validators`.
This module imports no torch, so `hw3 list` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeGuard

if TYPE_CHECKING:
    import torch

# Validator names are parts of metric names (`validator/<name>`, `selected/<name>/...`), and
# `last` is the selection of the last epoch.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED = frozenset({"last"})


class Outputs(NamedTuple):
    """A split's images through one domain's networks, on the CPU: the features the label head
    sees and its logits."""

    features: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class ValidationData:
    """What a validator scores: each validation split through the network its domain goes through
    (`Outputs`: features and logits, on the CPU), the source's labels, and the target's labels only
    for a validator that declares `uses_target_labels` (None for every other).

    The two splits' images (uint8 (N, C, H, W), in the order of the rows of `source` and
    `target`, where the run keeps them: on `device`) are there for a validator that trains on
    them, as reverse validation does; None where a caller has none (a validator needing them
    scores NaN then, which never wins a selection)."""

    source: Outputs
    source_labels: torch.Tensor
    target: Outputs
    target_labels: torch.Tensor | None
    seed: int = 0  # the run's seed, for a validator that draws (a subsample, a split)
    source_images: torch.Tensor | None = None
    target_images: torch.Tensor | None = None
    device: str = "cpu"  # the run's device, for a validator that trains a network of its own


@dataclass(frozen=True)
class Candidate:
    """One of the choices a `StudyValidator` ranks, an epoch of a run or a trial of a study: the
    softmax probabilities (N, classes, float, on the CPU) of the target validation split, the same
    N images in the same order for every candidate of one call. `name` says which it is, for
    messages ("epoch 3", "trial 7 run 1a2b...")."""

    target_probs: torch.Tensor
    name: str = ""


class Validator:
    """Subclass this, set `name` and `description`, write `score`, and register an instance with
    `hw3_register_validators`. `score` returns a float, larger meaning better."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    uses_target_labels: ClassVar[bool] = False  # True: an oracle, labelled as one everywhere
    citation: ClassVar[str] = ""  # where the idea is from, as `hw3 list` shows it

    def score(self, data: ValidationData) -> float:
        raise NotImplementedError


class StudyValidator(Validator):
    """A validator that scores candidates against each other rather than one epoch alone: subclass
    this, write `score_candidates`, register an instance as any validator. It has no per-epoch
    `validator/<name>` value: a run logs the epoch it picks among its own epochs at the end
    (`selected/<name>/...`, for `hw3 report --protocol`), and `hw3 tune` scores each finished
    trial's last epoch against the others'. It is given target predictions only (`Candidate`), so
    it cannot be an oracle."""

    def score_candidates(self, candidates: Sequence[Candidate]) -> list[float]:
        """One score per candidate, in their order, larger meaning better."""
        raise NotImplementedError


def is_study_level(validator: object) -> TypeGuard[StudyValidator]:
    """Whether `validator` scores a set of candidates (`StudyValidator`) rather than each epoch."""
    return isinstance(validator, StudyValidator)


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
    if isinstance(obj, StudyValidator):
        if type(obj).score_candidates is StudyValidator.score_candidates:
            return f"validator '{name}' is a StudyValidator and does not define score_candidates(candidates)"
        if obj.uses_target_labels:
            return f"validator '{name}': a StudyValidator sees target predictions only; it cannot use target labels"
    elif type(obj).score is Validator.score:
        return f"validator '{name}' does not define score(data)"
    return ""
