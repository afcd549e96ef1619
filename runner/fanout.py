"""A parent MLflow run with child runs under it: what `hw3 run --seeds` and `hw3 sweep` share.

The parent is opened first (an unreachable store stops everything before any training), every
child is an ordinary `hw3 run` nested under it, and the parent ends with the children's summary
(mean and std of the metrics that matter) whatever happened: all finished, one failed, or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from runner.errors import ConfigError, RunFailed, RunInterrupted
from runner.plan import RunRequest, make_plan
from runner.pool import Job, side_by_side
from runner.record import ParentRecord
from runner.run import RunResult, execute
from runner.settings import SEED_MAX

if TYPE_CHECKING:
    from runner.method import Method


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` as [0, 1, 2]: whole numbers in the seed range, each once."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: write whole numbers separated by commas, such as 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, such as 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is listed twice")
    if bad := [s for s in seeds if not 0 <= s <= SEED_MAX]:
        raise ConfigError(f"--seeds {text!r}: seed {bad[0]} is outside 0..{SEED_MAX}")
    return seeds


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_keys(method_cls: type[Method[Any]], results: Iterable[RunResult]) -> list[str]:
    """The metrics a parent reports: the method's primary metric, its `summary_metrics`, and every
    `selected/...` metric (each protocol's pick) its children logged."""
    keys = [method_cls.primary_metric, *method_cls.summary_metrics]
    found = sorted(
        {k for r in results for k in r.metrics if k.startswith("selected/") and not k.endswith(("/epoch", "/score"))}
    )
    return list(dict.fromkeys([*keys, *found]))


def aggregate(results: Sequence[RunResult], keys: Iterable[str], prefix: str = "") -> dict[str, float]:
    """`{prefix}{key}/mean` and `/std` over the results that have `key`."""
    out: dict[str, float] = {}
    for key in keys:
        values = [r.metrics[key] for r in results if key in r.metrics]
        if values:
            out[f"{prefix}{key}/mean"], out[f"{prefix}{key}/std"] = mean_std(values)
    return out


@dataclass
class Child:
    """One child run: its request (the parent's ID and experiment are filled in) and a label."""

    request: RunRequest
    label: str


@dataclass
class ChildRun:
    child: Child
    result: RunResult | None = None
    error: str | None = None


@dataclass
class Parent:
    """The parent run: where it goes and what it says about the whole."""

    experiment: str
    run_name: str
    record: ParentRecord
    params: dict[str, Any]
    what: str = "runs"  # how messages name the whole: "seeds", "sweep"
    primary: str = "target_acc"  # the children's headline metric


@dataclass
class FanOut:
    parent_run_id: str
    runs: list[ChildRun] = field(default_factory=list)  # in the children's order
    status: str = "RUNNING"

    @property
    def finished(self) -> list[RunResult]:
        return [r.result for r in self.runs if r.result is not None]


Summary = Callable[[FanOut], tuple[dict[str, float], dict[str, str]]]


def fan_out(
    parent: Parent,
    children: Sequence[Child],
    summarize: Summary,
    *,
    keep_going: bool,
    console: Console | None = None,
    workers: int = 1,
    device: str = "auto",
) -> FanOut:
    """Open the parent run, execute each child under it, then log `summarize`'s metrics and
    text artifacts on the parent and end it. With `keep_going` a failed child (a diverging
    setting) is recorded and the rest still run; otherwise its error ends the whole. With
    `workers` > 1, that many children run at once (`side_by_side`); `device` is the children's
    device setting, which says whether they spread over several GPUs."""
    from runner.tracking import Tracker

    console = console or Console()
    tracker = Tracker()  # an unreachable server stops here, before any run
    with tracker.open(parent.experiment, parent.run_name, parent.record, params=parent.params) as handle:
        out = FanOut(handle.run_id, [ChildRun(c) for c in children])
        requests = [
            dataclasses.replace(c.request, parent_run_id=handle.run_id, experiment=parent.experiment) for c in children
        ]
        try:
            if workers > 1:
                jobs = [Job(r, run.child.label, device) for r, run in zip(requests, out.runs, strict=True)]

                def on_end(i: int, outcome: Callable[[], RunResult]) -> None:
                    run = out.runs[i]
                    _settle(run, keep_going, console, outcome)
                    if run.result is not None:
                        ended = sum(r.result is not None or r.error is not None for r in out.runs)
                        _say_done(console, run, ended, len(out.runs), parent.primary)

                side_by_side(jobs, workers, console, on_end)
            else:
                for n, (run, request) in enumerate(zip(out.runs, requests, strict=True), start=1):
                    console.print(f"[bold]{escape(run.child.label)}[/] ({n} of {len(out.runs)})", highlight=False)
                    _settle(run, keep_going, console, functools.partial(execute, request, console))
            out.status = handle.status = "FINISHED" if out.finished else "FAILED"
        except (RunInterrupted, KeyboardInterrupt) as exc:
            out.status = "KILLED"
            why = f"{exc}; " if str(exc) else ""  # the child's own message names its checkpoint
            stopped = RunInterrupted(
                f"{why}the {parent.what} stopped after {len(out.finished)} of {len(out.runs)} runs; parent run "
                f"{handle.run_id} is marked KILLED"
            )
            stopped.run_id = getattr(exc, "run_id", "")  # the child run to resume
            raise stopped from None
        except BaseException:
            out.status = "FAILED"
            raise
        finally:  # what finished is summarised on the parent whatever happened, before it ends
            if out.finished or any(r.error for r in out.runs):
                metrics, texts = summarize(out)
                tracker.log_metrics(metrics, len(out.finished))
                for path, text in texts.items():
                    tracker.log_text(text, path)
    return out


def _settle(run: ChildRun, keep_going: bool, console: Console, outcome: Callable[[], RunResult]) -> None:
    """Record a child's result, or its failure when the others are to go on."""
    try:
        run.result = outcome()
    except RunFailed as exc:
        if not keep_going:
            raise
        console.print(f"[red]failed:[/] {escape(run.child.label)}: {escape(str(exc))}", highlight=False)
        run.error = str(exc)


def _say_done(console: Console, run: ChildRun, n: int, total: int, primary: str) -> None:
    from runner.progress import fmt_value

    result = run.result
    assert result is not None
    value = result.metrics.get(primary)
    shown = f"{primary} {fmt_value(primary, value)}" if value is not None else result.status
    console.print(f"({n} of {total}) {escape(run.child.label)}: {shown}  run {result.run_id}", highlight=False)


@dataclass
class SeedsResult:
    parent_run_id: str
    children: list[RunResult]
    summary: dict[str, float]  # `{metric}/mean` and `{metric}/std`, as logged on the parent
    keys: list[str]  # the metrics summarised, the primary one first


def run_seeds(req: RunRequest, seeds: list[int], console: Console | None = None) -> SeedsResult:
    """`hw3 run --seeds`: one child run per seed under a parent run that logs each summary
    metric's mean and std. A failed seed ends the whole (its error is the command's)."""
    from runner.plugins import get_manager

    if req.resume:
        raise ConfigError("--seeds starts new runs; resume each seed's run on its own with --resume RUN_ID")
    if any(k == "seed" for k, _ in req.overrides):
        raise ConfigError("give either --seed or --seeds, not both")
    planned = make_plan(req, get_manager())
    method_cls, resolved = planned.method_cls, planned.resolved
    task, label = resolved.task, ",".join(map(str, seeds))
    rec = ParentRecord(req.method, task, seeds)
    parent = Parent(
        experiment=planned.experiment,
        run_name=req.run_name or f"{req.method}-{task.slug}-seeds{label}",
        record=rec,
        params=rec.params({k: v for k, v in resolved.flat().items() if k != "seed"}),
        what="seeds",
        primary=method_cls.primary_metric,
    )
    children = [
        Child(dataclasses.replace(req, overrides=[*req.overrides, ("seed", seed)], run_name=None), f"seed {seed}")
        for seed in seeds
    ]
    summary: dict[str, float] = {}
    keys: list[str] = []

    def summarize(out: FanOut) -> tuple[dict[str, float], dict[str, str]]:
        keys[:] = summary_keys(method_cls, out.finished)
        summary.update(aggregate(out.finished, keys))
        return summary, {}

    out = fan_out(parent, children, summarize, keep_going=False, console=console)
    return SeedsResult(out.parent_run_id, out.finished, summary, keys)
