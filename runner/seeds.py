"""`hw3 run --seeds`: one child run per seed under a parent run that logs mean and std."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from runner.errors import ConfigError, RunInterrupted
from runner.plugins import get_manager
from runner.run import RunRequest, RunResult, _run_name, execute, experiment_name, plan

AGGREGATED = (
    "target_acc",
    "source_acc",
    "proxy_a_distance",
    "selected/source_val/target_acc",
    "selected/im/target_acc",
    "selected/oracle/target_acc",
)


@dataclass
class SeedsResult:
    parent_run_id: str
    children: list[RunResult]
    summary: dict[str, float]


def execute_seeds(req: RunRequest, seeds: list[int], console: Console | None = None) -> SeedsResult:
    """One child run per seed under a parent run that logs each metric's mean and std."""
    import statistics

    from runner import tracking

    console = console or Console()
    if req.resume:
        raise ConfigError("--seeds starts new runs; resume each seed's run on its own with --resume RUN_ID")
    if any(k == "seed" for k, _ in req.overrides):
        raise ConfigError("give either --seed or --seeds, not both")
    manager = get_manager()
    resolved = plan(req, manager)
    tracker = tracking.Tracker()
    experiment = req.experiment or experiment_name(resolved)
    where = {"pair": resolved.pair} if resolved.pair else {"dataset": resolved.dataset}
    label = ",".join(map(str, seeds))
    parent = tracker.start(
        experiment,
        req.run_name or f"{_run_name(resolved).rsplit('-seed', 1)[0]}-seeds{label}",
        {"method": req.method, **where, "hw3.seeds": label, "hw3.parent": "true", **tracking.version_tags()},
    )
    params = {k: v for k, v in resolved.flat().items() if k != "seed"}
    tracker.log_params({"method": req.method, **where, "seeds": label, **params})
    children: list[RunResult] = []
    status = "FAILED"
    try:
        for seed in seeds:
            console.print(f"[bold]seed {seed}[/] ({len(children) + 1} of {len(seeds)})", highlight=False)
            child = RunRequest(
                **{
                    **req.__dict__,
                    "overrides": [*req.overrides, ("seed", seed)],
                    "parent_run_id": parent,
                    "run_name": None,
                }
            )
            children.append(execute(child, console))
        summary: dict[str, float] = {}
        for key in AGGREGATED:
            values = [c.metrics[key] for c in children if key in c.metrics]
            if values:
                summary[f"{key}/mean"] = statistics.fmean(values)
                summary[f"{key}/std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        tracker.log_metrics(summary, len(seeds))
        status = "FINISHED"
    except RunInterrupted:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
    return SeedsResult(parent, children, summary)
