"""From cached uint8 splits to what networks see: the run's common shape, the [-1, 1] range,
endless shuffled training batches that checkpoint exactly, and in-order evaluation batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner.datasets import Split
from runner.errors import DataError

if TYPE_CHECKING:
    import torch


def conform(split: Split, channels: int, size: int) -> Split:
    """Bring a split to a common channel count and square size, staying uint8."""
    import torch
    import torch.nn.functional as F

    x = split.images
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return Split(x, split.labels, split.attributes, split.attribute_names)


def to_network_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the input range of every built-in network (a logged model,
    `FromUnitRange`, takes [0, 1] and maps it on)."""
    return (images - 127.5).div_(127.5)  # two ops: the subtraction already makes floats


class BatchStream:
    """Endless shuffled batches of one split, whose position checkpoints exactly.

    The permutation comes from its own CPU generator, so resuming from a checkpoint draws the
    same batches an uninterrupted run would have drawn.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator | int,
        labels: bool,
        channels_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        import torch

        if len(split) < batch_size * world:
            raise DataError(
                f"a training split has {len(split)} images, fewer than batch_size={batch_size} x {world} "
                "process(es); lower it with --set batch_size=N"
            )
        self.split, self.batch_size, self.labels = split, batch_size, labels
        # Distributed: every process shuffles alike and takes its own slice of each global batch.
        self.rank, self.world = rank, world
        self.channels_last = channels_last
        if isinstance(generator, int):  # a seed, as this class took before named random streams
            generator = torch.Generator().manual_seed(generator)
        self.generator = generator
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        import torch

        n = len(self.split)
        step = self.batch_size * self.world
        if self.perm is None or self.pos + step > n:  # drop the ragged tail, as drop_last
            # Drawn on the CPU (a generator that checkpoints alike on every device), then moved
            # to the images' device once per pass, not once per batch.
            self.perm = torch.randperm(n, generator=self.generator).to(self.split.images.device)
            self.pos = 0
        start = self.pos + self.rank * self.batch_size
        idx = self.perm[start : start + self.batch_size]
        self.pos += step
        x = to_network_range(self.split.images[idx])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (self.split.labels[idx] if self.labels else None)

    def state_dict(self) -> dict[str, Any]:
        perm = self.perm.cpu() if self.perm is not None else None
        return {"generator": self.generator.get_state(), "perm": perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        perm = state["perm"]
        self.perm = perm.to(self.split.images.device) if perm is not None else None
        self.pos = state["pos"]


def batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, for evaluation."""
    for i in range(0, len(split), batch_size):
        yield to_network_range(split.images[i : i + batch_size]), split.labels[i : i + batch_size]
