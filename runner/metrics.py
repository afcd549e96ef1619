"""Classification figures shared by every adaptation method."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from runner.data import Split
    from runner.engine import RunContext


@torch.no_grad()
def predict(forward: Callable[[torch.Tensor], torch.Tensor], split: Split, ctx: RunContext) -> torch.Tensor:
    """Predicted classes of a whole split (the network must already be in eval mode)."""
    out = []
    for x, _ in ctx.eval_batches(split):
        with ctx.autocast():
            out.append(forward(x).argmax(1).cpu())
    return torch.cat(out)


def confusion(pred: torch.Tensor, true: torch.Tensor, n_classes: int) -> torch.Tensor:
    idx = true.cpu().long() * n_classes + pred.cpu().long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy_metrics(cm: torch.Tensor, prefix: str) -> dict[str, float]:
    """`{prefix}_acc` and `{prefix}_class_acc/<k>` from a confusion matrix."""
    per_class = cm.diag().float() / cm.sum(1).clamp(min=1).float()
    out = {f"{prefix}_acc": float(cm.diag().sum() / cm.sum().clamp(min=1))}
    out.update({f"{prefix}_class_acc/{k}": float(v) for k, v in enumerate(per_class)})
    return out
