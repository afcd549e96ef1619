"""AdaBN (Li et al. 2016): a network's copy that normalises with another domain's batch-norm
statistics, such as DANN testing target images with target statistics."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from runner.batches import batches
from runner.datasets import Split

if TYPE_CHECKING:
    from runner.context import RunContext


def with_statistics_of(
    net: nn.Module, split: Split, ctx: RunContext, limit: int = 2048, batch_size: int = 256
) -> nn.Module:
    """A copy of `net`, in eval mode, whose batch-norm layers hold the statistics of (up to
    `limit` random) images of `split`."""
    twin = copy.deepcopy(net)
    for m in twin.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below, so they must be equal in size
    n = min(len(split), limit)
    part = split.subset(n if n < batch_size else n - n % batch_size)
    # Only batch norm learns statistics: dropout stays off, so the head's batch norm sees the
    # features it will see at test time, and no random number is drawn from the training stream.
    twin.eval()
    for m in twin.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    with torch.no_grad(), ctx.autocast():
        for x, _ in batches(part, batch_size):
            twin(x)
    return twin.eval()
