"""Work on finished runs: figures made again from a run's logged model and config."""

from __future__ import annotations

import json
from pathlib import Path

from runner.errors import Hw3Error


def tsne_for_run(run_id: str, points: int, data_root: str | None) -> list[str]:
    """t-SNE of a finished adaptation run's model's features on its pair, logged to the run."""
    import mlflow
    import torch

    from runner.config import load_registry, resolve
    from runner.data import batches
    from runner.plugins import get_manager
    from runner.run import load_domains
    from runner.tracking import Tracker
    from runner.viz import tsne_figures

    tracker = Tracker()
    run = tracker.find_run(run_id)
    try:
        saved = json.loads(Path(tracker.client.download_artifacts(run_id, "config.json")).read_text())
    except Exception:
        raise Hw3Error(f"run {run_id} has no config.json artifact; it was not made by hw3 run") from None
    if not saved.get("source"):
        raise Hw3Error(f"run {run_id} is not an adaptation run (it has no source:target pair)")
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location="cpu").eval()
    except Exception as exc:
        raise Hw3Error(f"run {run_id}: its model could not be loaded ({str(exc).splitlines()[0]})") from None
    if not hasattr(model, "embed"):
        raise Hw3Error(f"run {run_id}: its model has no embed() for features; it is not an hw3 classifier")
    manager = get_manager()
    names = (saved["source"], saved["target"])
    resolved = resolve(
        manager.method(run.data.tags["method"]),
        load_registry(),
        source=saved["source"],
        target=saved["target"],
        overrides=list(saved["config"].items()),
        dataset_options={n: set(manager.dataset(n).options) for n in names},
    )
    domains = load_domains(resolved, manager, data_root, torch.device("cpu"))
    feats, labels, which = [], [], []
    for d, role in enumerate(("source", "target")):
        split = domains[role].test
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[: points // 2]
        part = split.take(idx)
        with torch.no_grad():
            feats += [model.embed((x + 1) / 2) for x, _ in batches(part, 500)]
        labels.append(part.labels)
        which.append(torch.full((len(part),), d))
    figs = tsne_figures(
        torch.cat(feats).numpy(),
        torch.cat(labels).numpy(),
        torch.cat(which).numpy(),
        domains["source"].classes,
        [f"source: {names[0]}", f"target: {names[1]}"],
        f"{run.data.tags['method']} on {names[0]}:{names[1]} (run {run_id[:8]})",
        seed=resolved.settings.seed,
    )
    tracker.run_id = run_id
    for name, fig in figs.items():
        tracker.log_figure(fig, f"figures/{name}")
    return [f"figures/{n}" for n in figs]
