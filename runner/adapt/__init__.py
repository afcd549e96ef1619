"""The adaptation toolkit: what built-in and third-party adaptation methods build on.

`AdaptMethod` gives a method the evaluation, figures and logged model every built-in
adaptation method has, so its runs line up with theirs in `hw3 report` and the MLflow UI:
`target_acc`, `source_acc`, per-class accuracy, confusion matrices, each validator's score, `domain_acc`
(with a `self.discriminator`), the proxy A-distance, t-SNE figures and `runs:/<id>/model`.
Beside it: the DANN paper's digit networks, gradient reversal, AdaBN, input augmentation, weight
averaging and the shared evaluation helpers.

Each name is imported from its module when first asked for, so a plugin that only subclasses
`AdaptMethod` loads without torch (and `hw3 list` stays fast); the rest import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.lazy import lazy_exports

if TYPE_CHECKING:
    from runner.adapt.adabn import with_statistics_of
    from runner.adapt.augmentation import augment, strong_augment
    from runner.adapt.config import ClassifierConfig, OptimizedClassifierConfig
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
    from runner.adapt.networks import (
        Composed,
        DigitClassifier,
        FromUnitRange,
        domain_head,
        domain_labels,
        grad_reverse,
        pick_arch,
    )
    from runner.averaging import averaged_copy, update_average
    from runner.optim import make_optimizer
    from runner.validator import Outputs

__all__ = [
    "AdaptMethod",
    "ClassifierConfig",
    "Composed",
    "DigitClassifier",
    "FeatureModel",
    "FromUnitRange",
    "OptimizedClassifierConfig",
    "Outputs",
    "accuracy_metrics",
    "augment",
    "averaged_copy",
    "collect",
    "confusion",
    "domain_head",
    "domain_labels",
    "grad_reverse",
    "information_maximization",
    "information_maximization_objective",
    "load_classifier",
    "make_optimizer",
    "per_class_accuracy",
    "pick_arch",
    "proxy_a_distance",
    "strong_augment",
    "tsne",
    "update_average",
    "with_statistics_of",
]


__getattr__, __dir__ = lazy_exports(globals())
