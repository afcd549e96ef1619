"""The adaptation toolkit: what built-in and third-party adaptation methods build on.

`AdaptMethod` gives a method the evaluation, figures and logged model every built-in
adaptation method has, so its runs line up with theirs in `hw3 report` and the MLflow UI:
`target_acc`, `source_acc`, per-class accuracy, confusion matrices, `target_im`, `domain_acc`
(with a `self.discriminator`), the proxy A-distance, t-SNE figures and `runs:/<id>/model`.
Beside it: the DANN paper's digit networks, gradient reversal, AdaBN, input augmentation, weight
averaging and the shared evaluation helpers.

Each name is imported from its module when first asked for, so a plugin that only subclasses
`AdaptMethod` loads without torch (and `hw3 list` stays fast); the rest import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.adapt.adabn import with_statistics_of
    from runner.adapt.augmentation import augment
    from runner.adapt.evaluation import (
        accuracy_metrics,
        collect,
        confusion,
        information_maximization,
        information_maximization_objective,
        per_class_accuracy,
        proxy_a_distance,
    )
    from runner.adapt.features import FeatureModel, tsne
    from runner.adapt.method import AdaptMethod, load_classifier
    from runner.adapt.networks import Composed, DigitClassifier, FromUnitRange, domain_head, grad_reverse, pick_arch
    from runner.averaging import averaged_copy, update_average

_HOMES = {
    "AdaptMethod": "method",
    "load_classifier": "method",
    "Composed": "networks",
    "DigitClassifier": "networks",
    "FromUnitRange": "networks",
    "domain_head": "networks",
    "grad_reverse": "networks",
    "pick_arch": "networks",
    "with_statistics_of": "adabn",
    "augment": "augmentation",
    "averaged_copy": "runner.averaging",  # shared with the generative toolkit
    "update_average": "runner.averaging",
    "accuracy_metrics": "evaluation",
    "collect": "evaluation",
    "confusion": "evaluation",
    "information_maximization": "evaluation",
    "information_maximization_objective": "evaluation",
    "per_class_accuracy": "evaluation",
    "proxy_a_distance": "evaluation",
    "FeatureModel": "features",
    "tsne": "features",
}
__all__ = [
    "AdaptMethod",
    "Composed",
    "DigitClassifier",
    "FeatureModel",
    "FromUnitRange",
    "accuracy_metrics",
    "augment",
    "averaged_copy",
    "collect",
    "confusion",
    "domain_head",
    "grad_reverse",
    "information_maximization",
    "information_maximization_objective",
    "load_classifier",
    "per_class_accuracy",
    "pick_arch",
    "proxy_a_distance",
    "tsne",
    "update_average",
    "with_statistics_of",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runner.adapt' has no attribute {name!r}")
    value = getattr(importlib.import_module(home if "." in home else f"runner.adapt.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
