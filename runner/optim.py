"""Optimizers: the one place hw3's methods build theirs, so a choice made for every method (such as
the fused or foreach form a device runs fastest) is made here once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """`name`'s optimizer over `params`: "adam" (L2 weight decay added to the gradient), "adamw"
    (decoupled weight decay) or "sgd" with `momentum` (Nesterov's with `nesterov`); `betas` are
    Adam's. In its fused form where the parameters' device has one (the CPU and CUDA): one kernel
    for all parameters, and no read of each parameter's step counter back to the host, as the
    plain form makes every step."""
    groups: list[Any] = list(params)  # tensors or param groups
    fused = {"fused": True} if _fusable(groups) else {}
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, **fused)
    raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def _fusable(params: list[Any]) -> bool:
    """Whether every parameter (of plain tensors or param groups) is a floating tensor on a device
    with fused optimizer kernels."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
