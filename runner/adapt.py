"""The stable home of what third-party adaptation methods build on.

`AdaptMethod` gives a method the evaluation, figures and logged model every built-in
adaptation method has, so its runs line up with theirs in `hw3 report` and the MLflow UI:
`target_acc`, `source_acc`, per-class accuracy, confusion matrices, `target_im`, `domain_acc`
(with a `self.discriminator`), the proxy A-distance, t-SNE figures and `runs:/<id>/model`.

The code lives with the built-in methods (`plugins.methods`); import it from here, which
stays put when that moves. Importing this module imports torch.
"""

from __future__ import annotations

from plugins.methods.common import AdaptMethod, tsne, with_statistics_of
from plugins.methods.nets import DigitClassifier, FromUnitRange, domain_head, grad_reverse, pick_arch

__all__ = [
    "AdaptMethod",
    "DigitClassifier",
    "FromUnitRange",
    "domain_head",
    "grad_reverse",
    "pick_arch",
    "tsne",
    "with_statistics_of",
]
