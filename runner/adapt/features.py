"""t-SNE of source and target features, by class and by domain (the report's figures 5 to 8):
at the end of a run, and again later for a finished run's logged model (`hw3 tsne`).

Both draw the same test images: the points are chosen in one place, `tsne_points`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from runner.context import Domain, RunContext
    from runner.datasets import Split

ROLES = ("source", "target")


@runtime_checkable
class FeatureModel(Protocol):
    """What `hw3 tsne` needs of a run's logged model: the features its label head sees, for
    images in [0, 1] (`runner.adapt.FromUnitRange` has it)."""

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...


def tsne_points(domains: Mapping[str, Domain], n: int) -> dict[str, Split]:
    """Up to `n` test images, half from each domain: the same ones every time for a pair."""
    out = {}
    for role in ROLES:
        split = domains[role].test
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[: n // 2]
        out[role] = split.take(idx.to(split.images.device))
    return out


def tsne_figures_of(
    embed: Callable[[str, Split], torch.Tensor], domains: Mapping[str, Domain], n: int, title: str, seed: int
) -> dict[str, Figure]:
    """The two t-SNE figures of `n` points, `embed(role, split)` giving each domain's features."""
    from runner.figures import tsne_figures

    parts = tsne_points(domains, n)
    feats = [embed(role, parts[role]).float().cpu() for role in ROLES]
    names = [f"{role}: {domains[role].name}" for role in ROLES]
    return tsne_figures(
        torch.cat(feats).numpy(),
        torch.cat([parts[role].labels.cpu() for role in ROLES]).numpy(),
        torch.cat([torch.full((len(parts[role]),), d) for d, role in enumerate(ROLES)]).numpy(),
        domains["source"].classes,
        names,
        title,
        seed=seed,
    )


def tsne(encoder: Callable[[str], torch.nn.Module], ctx: RunContext, title: str) -> dict[str, Figure]:
    """t-SNE figures of the features of `tsne_points` source and target test images;
    `encoder(role)` gives the feature extractor of each domain (in eval mode)."""
    from runner.adapt.evaluation import collect

    return tsne_figures_of(
        lambda role, part: collect(encoder(role), part, ctx),
        ctx.domains,
        ctx.settings.tsne_points,
        title,
        ctx.settings.seed,
    )
