"""Exponential moving averages of a network's weights: DANN's averaged weights, the
self-ensembling teacher, the GAN's averaged generator."""

from __future__ import annotations

import copy

import torch
from torch import nn


def averaged_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` to hold its moving average (see `update_average`)."""
    twin = copy.deepcopy(net)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def update_average(average: nn.Module, net: nn.Module, decay: float, buffers: bool = True) -> None:
    """average = decay * average + (1 - decay) * net, parameter by parameter; with `buffers`,
    batch-norm statistics are copied as they are (an average of averages adds nothing)."""
    mine, theirs = list(average.parameters()), [p.detach() for p in net.parameters()]
    if len(mine) != len(theirs):
        raise ValueError(f"update_average: {len(mine)} parameters against {len(theirs)}")
    # Two foreach kernels for the whole network, not two per parameter; the same arithmetic.
    torch._foreach_mul_(mine, decay)
    torch._foreach_add_(mine, theirs, alpha=1.0 - decay)
    if buffers:
        for a, b in zip(average.buffers(), net.buffers(), strict=True):
            a.copy_(b)
