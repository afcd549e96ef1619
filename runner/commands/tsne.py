"""`hw3 tsne`: t-SNE of a finished adaptation run's logged model, on its pair, logged to the run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from runner.adapt.features import FeatureModel, tsne_figures_of
from runner.errors import Hw3Error

if TYPE_CHECKING:
    from runner.datasets import Split


def tsne_for_run(run_id: str, points: int, data_root: str | None) -> list[str]:
    """t-SNE of a finished adaptation run's model's features on its pair, logged to the run."""
    from runner.batches import batches
    from runner.config import SavedConfig
    from runner.runs.plan import resolve_with
    from runner.runs.plugins import get_manager
    from runner.runs.prepare import load_domains
    from runner.tracking import Tracker

    tracker = Tracker()
    store = tracker.store
    rec = store.record(run_id)
    saved = SavedConfig.from_dict(store.config_of(run_id))
    task = saved.task
    if not task.is_pair:
        raise Hw3Error(f"run {run_id} is not an adaptation run (it has no source:target pair)")
    from runner.adapt.networks import FromUnitRange

    model = store.load_model(run_id, FromUnitRange.from_spec)
    if not isinstance(model, FeatureModel):
        raise Hw3Error(f"run {run_id}: its model has no embed() for features; it is not an hw3 classifier")
    manager = get_manager()
    resolved = resolve_with(manager, manager.method(rec.method), task, overrides=list(saved.values.items()))
    domains = load_domains(resolved, manager, data_root, torch.device("cpu"))

    def embed(role: str, part: Split) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.embed((x + 1) / 2) for x, _ in batches(part, 500)])

    title = f"{rec.method} on {task.label} (run {run_id[:8]})"
    figs = tsne_figures_of(embed, domains, points, title, resolved.settings.seed)
    tracker.run_id = run_id
    for name, fig in figs.items():
        tracker.log_figure(fig, f"figures/{name}")
    return [f"figures/{n}" for n in figs]
