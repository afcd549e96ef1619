"""t-SNE of source and target features, by class and by domain (the report's figures 5 to 8):
at the end of a run, and again later for a finished run's logged model (`hw3 tsne`).

Both draw the same test images: the points are chosen in one place, `tsne_points`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from runner.errors import Hw3Error

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


def tsne_for_run(run_id: str, points: int, data_root: str | None) -> list[str]:
    """t-SNE of a finished adaptation run's model's features on its pair, logged to the run."""
    from runner.batches import batches
    from runner.config import SavedConfig
    from runner.plugins import get_manager
    from runner.run import load_domains, resolve_with
    from runner.tracking import Tracker

    tracker = Tracker()
    run = tracker.find_run(run_id, "run")
    try:
        saved = SavedConfig.from_dict(
            json.loads(Path(tracker.client.download_artifacts(run_id, "config.json")).read_text())
        )
    except Exception:
        raise Hw3Error(f"run {run_id} has no config.json artifact; it was not made by hw3 run") from None
    task = saved.task
    if not task.is_pair:
        raise Hw3Error(f"run {run_id} is not an adaptation run (it has no source:target pair)")
    from runner.adapt.networks import FromUnitRange

    model = tracker.load_model(run_id, FromUnitRange.from_spec)
    if not isinstance(model, FeatureModel):
        raise Hw3Error(f"run {run_id}: its model has no embed() for features; it is not an hw3 classifier")
    manager = get_manager()
    resolved = resolve_with(
        manager, manager.method(run.data.tags["method"]), task, overrides=list(saved.values.items())
    )
    domains = load_domains(resolved, manager, data_root, torch.device("cpu"))

    def embed(role: str, part: Split) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.embed((x + 1) / 2) for x, _ in batches(part, 500)])

    title = f"{run.data.tags['method']} on {task.label} (run {run_id[:8]})"
    figs = tsne_figures_of(embed, domains, points, title, resolved.settings.seed)
    tracker.run_id = run_id
    for name, fig in figs.items():
        tracker.log_figure(fig, f"figures/{name}")
    return [f"figures/{n}" for n in figs]
