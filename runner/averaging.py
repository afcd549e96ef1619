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
    # Under no_grad the trained parameters are read as they are: no detached views (an op each).
    mine: list[torch.Tensor] = list(average.parameters())
    theirs: list[torch.Tensor] = list(net.parameters())
    if len(mine) != len(theirs):
        raise ValueError(f"update_average: {len(mine)} parameters against {len(theirs)}")
    # One foreach kernel for the whole network, not two per parameter:
    # average + (1 - decay) * (net - average) = decay * average + (1 - decay) * net.
    torch._foreach_lerp_(mine, theirs, 1.0 - decay)
    if buffers:
        mine_b, theirs_b = list(average.buffers()), list(net.buffers())
        if len(mine_b) != len(theirs_b):
            raise ValueError(f"update_average: {len(mine_b)} buffers against {len(theirs_b)}")
        if mine_b:
            torch._foreach_copy_(mine_b, theirs_b)
