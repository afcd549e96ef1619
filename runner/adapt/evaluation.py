"""The evaluation every adaptation method shares: accuracy and confusion, the information
maximization score of target predictions, and the proxy A-distance between domains."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from runner.context import RunContext
    from runner.datasets import Split


def confusion(pred: torch.Tensor, true: torch.Tensor, n_classes: int) -> torch.Tensor:
    idx = true.cpu().long() * n_classes + pred.cpu().long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy_metrics(cm: torch.Tensor, prefix: str) -> dict[str, float]:
    """`{prefix}_acc` from a confusion matrix (per-class accuracy: `per_class_accuracy`)."""
    return {f"{prefix}_acc": float(cm.diag().sum() / cm.sum().clamp(min=1))}


def per_class_accuracy(cm: torch.Tensor) -> list[float]:
    """Each class's accuracy (recall) from a confusion matrix, true classes down."""
    return (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()


@torch.no_grad()
def collect(forward: Callable[[torch.Tensor], torch.Tensor], split: Split, ctx: RunContext) -> torch.Tensor:
    """`forward` over a whole split in evaluation batches, concatenated on the CPU."""
    out = []
    for x, _ in ctx.eval_batches(split):
        with ctx.autocast():
            out.append(forward(x).float().cpu())
    return torch.cat(out)


def information_maximization_objective(probs: torch.Tensor) -> torch.Tensor:
    """H(mean prediction) - mean H(prediction) over rows of class probabilities, as a tensor that
    gradients flow through: a loss term for methods that want confident target predictions that
    still use every class (Hu et al. 2017), and the score below."""

    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(p * p.clamp_min(1e-8).log()).sum(-1)

    return entropy(probs.mean(0)) - entropy(probs).mean()


def information_maximization(logits: torch.Tensor) -> float:
    """IM score of target predictions, higher is better: H(mean prediction) - mean H(prediction).

    Confident predictions that still use every class score high; it needs no target labels, so
    it can choose a checkpoint honestly (as pytorch-adapt's IM validator does).
    """
    return float(information_maximization_objective(logits.float().softmax(1)))


def proxy_a_distance(source: torch.Tensor, target: torch.Tensor, seed: int = 0) -> float:
    """Ben-David et al.'s proxy A-distance, 2 (1 - 2 err), of a linear domain classifier trained on
    half of the features and tested on the other half: 0 when the domains are indistinguishable,
    2 when they are perfectly separable."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([source, target]).numpy()
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    train, test = order[:half], order[half:]
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=300, C=0.1).fit(scaler.transform(x[train]), y[train])
    err = 1.0 - clf.score(scaler.transform(x[test]), y[test])
    return float(2.0 * (1.0 - 2.0 * min(err, 0.5)))
