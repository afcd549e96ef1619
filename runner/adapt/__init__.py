"""The adaptation toolkit: what built-in and third-party adaptation methods build on.

`AdaptMethod` gives a method the evaluation, figures and logged model every built-in
adaptation method has, so its runs line up with theirs in `hw3 report` and the MLflow UI:
`target_acc`, `source_acc`, per-class accuracy, confusion matrices, `target_im`, `domain_acc`
(with a `self.discriminator`), the proxy A-distance, t-SNE figures and `runs:/<id>/model`.
Beside it: the DANN paper's digit networks, gradient reversal, AdaBN, input augmentation and
the shared evaluation helpers. Importing this module imports torch.
"""

from runner.adapt.adabn import with_statistics_of
from runner.adapt.augmentation import augment
from runner.adapt.evaluation import (
    accuracy_metrics,
    collect,
    confusion,
    information_maximization,
    proxy_a_distance,
)
from runner.adapt.features import FeatureModel, tsne
from runner.adapt.method import AdaptMethod, load_classifier
from runner.adapt.networks import DigitClassifier, FromUnitRange, domain_head, grad_reverse, pick_arch

__all__ = [
    "AdaptMethod",
    "DigitClassifier",
    "FeatureModel",
    "FromUnitRange",
    "accuracy_metrics",
    "augment",
    "collect",
    "confusion",
    "domain_head",
    "grad_reverse",
    "information_maximization",
    "load_classifier",
    "pick_arch",
    "proxy_a_distance",
    "tsne",
    "with_statistics_of",
]
