"""Optimizers: the one place hw3's methods build theirs, so a choice made for every method (such as
the fused or foreach form a device runs fastest) is made here once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.optim.optimizer import ParamsT

OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(
    params: ParamsT,
    name: str,
    lr: float,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """`name`'s optimizer over `params`: "adam" (L2 weight decay added to the gradient), "adamw"
    (decoupled weight decay) or "sgd" with `momentum`; `betas` are Adam's."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
