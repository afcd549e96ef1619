"""Many runs as one whole, under a parent MLflow run where there is one: what `hw3 run --seeds`,
`hw3 sweep`, `hw3 reproduce` and `hw3 tune` share (`fan_out`).

The parent is opened first (an unreachable store stops everything before any training), every
child is an ordinary `hw3 run` (or a tune worker's loop of them) nested under it, and the parent
ends with the children's summary (mean and std of the metrics that matter) whatever happened:
all finished, one failed, or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.markup import escape

from runner.errors import ConfigError, Hw3Error, RunInterrupted
from runner.record import ParentRecord
from runner.runs.execute import RunResult
from runner.runs.plan import RunRequest, make_plan
from runner.runs.pool import Ended, Job, Placement, RunWork, Work, side_by_side
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
    """One child: its work (`RunWork` for a run; where it has `under`, the parent's ID and
    experiment are filled in with it) and how messages name it."""

    work: Work
    label: str


@dataclass
class ChildRun:
    child: Child
    result: Any = None  # what its work returned: a RunResult for a run
    error: str | None = None


@dataclass
class Parent:
    """The parent run: where it goes and what it says about the whole. With `resume`, an
    existing parent run goes on (a tune joining its study's parent); its params stay as they are."""

    experiment: str
    run_name: str
    record: ParentRecord
    params: dict[str, Any]
    resume: str = ""
    opened: Callable[[str], None] | None = None  # told the parent's run ID once it is open


@dataclass
class FanOut:
    parent_run_id: str  # "" without a parent run
    runs: list[ChildRun] = field(default_factory=list)  # in the children's order
    status: str = "RUNNING"

    @property
    def finished(self) -> list[Any]:
        return [r.result for r in self.runs if r.result is not None]


@dataclass
class Summary:
    """What a parent run logs about the whole when it ends."""

    metrics: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> text
    figures: dict[str, Any] = field(default_factory=dict)  # artifact path -> matplotlib figure
    step: int | None = None  # the metrics' step: the children that finished, unless given


Summarize = Callable[[FanOut], Summary | None]  # None: nothing to say (nothing ended)


class Executor(Protocol):
    """Runs jobs somewhere else than the local pool (a Slurm cluster), calling `ended` as each ends."""

    def run(self, jobs: Sequence[Job], console: Console, ended: Ended) -> None: ...


def fan_out(
    children: Sequence[Child],
    *,
    parent: Parent | None = None,
    summarize: Summarize | None = None,
    keep_going: bool,
    what: str = "runs",
    primary: str = "",
    stop_hint: str = "",
    console: Console | None = None,
    workers: int = 1,
    device: str = "auto",
    executor: Executor | None = None,
) -> FanOut:
    """Run `children`, under a parent run where there is one: the parent is opened first (an
    unreachable store stops everything before any work), and ends with `summarize`'s metrics,
    texts and figures whatever happened: all finished, one failed, or a stop.

    What all four many-runs commands share: with `keep_going` a failed child (a diverging
    setting) is recorded and the rest still run, else its error ends the whole; with `workers`
    > 1 that many run at once in the one pool (`runner.runs.pool`, whose stop policy holds);
    a line per child as it ends (`primary`, the children's headline metric, in it); a stop is
    one RunInterrupted that says how far the whole got (`what`: "seeds", "sweep", "suite") and
    `stop_hint`, how to go on. `device` is the children's device setting, which says whether
    they spread over several GPUs. An `executor` (`runner.runs.slurm.SlurmExecutor`) runs them
    elsewhere instead of `workers`, under the same rules."""
    from runner.tracking import Tracker

    console = console or Console()
    if parent is None:
        return _drive(FanOut("", [ChildRun(c) for c in children]), console, keep_going, what, primary, stop_hint,
                      workers, device, executor)  # fmt: skip
    tracker = Tracker()  # an unreachable server stops here, before any run
    params = None if parent.resume else parent.params
    with tracker.open(parent.experiment, parent.run_name, parent.record, params=params, resume=parent.resume) as handle:
        out = FanOut(handle.run_id)
        if parent.opened is not None:
            parent.opened(handle.run_id)
        for c in children:
            under = getattr(c.work, "under", None)
            out.runs.append(ChildRun(Child(under(handle.run_id, parent.experiment) if under else c.work, c.label)))
        hint = stop_hint or f"parent run {handle.run_id} is marked KILLED"
        try:
            _drive(out, console, keep_going, what, primary, hint, workers, device, executor)
            handle.status = out.status
        except BaseException:
            handle.status = out.status = "KILLED" if out.status == "KILLED" else "FAILED"
            raise
        finally:  # what finished is summarised on the parent whatever happened, before it ends
            summary = summarize(out) if summarize is not None else None
            if summary is not None:
                tracker.log_metrics(summary.metrics, len(out.finished) if summary.step is None else summary.step)
                for path, text in summary.texts.items():
                    tracker.log_text(text, path)
                for path, fig in summary.figures.items():
                    tracker.log_figure(fig, path)
    return out


def _drive(
    out: FanOut,
    console: Console,
    keep_going: bool,
    what: str,
    primary: str,
    stop_hint: str,
    workers: int,
    device: str,
    executor: Executor | None = None,
) -> FanOut:
    total = len(out.runs)
    if not total:  # nothing to run (a suite whose runs all finished earlier)
        out.status = "FINISHED"
        return out
    try:
        if executor is not None or workers > 1:
            jobs = [Job(run.child.work, run.child.label, device) for run in out.runs]

            def on_end(i: int, outcome: Callable[[], Any]) -> None:
                run = out.runs[i]
                _settle(run, keep_going, console, outcome)
                if run.result is not None:
                    _say_done(console, run, sum(r.result is not None or r.error is not None for r in out.runs),
                              total, primary)  # fmt: skip

            if executor is not None:
                executor.run(jobs, console, on_end)
            else:
                side_by_side(jobs, workers, console, on_end)
        else:
            for n, run in enumerate(out.runs, start=1):
                console.print(f"[bold]{escape(run.child.label)}[/] ({n} of {total})", highlight=False)
                work = run.child.work
                _settle(run, keep_going, console, functools.partial(work, Placement(console)))
                if run.result is not None:
                    _say_done(console, run, n, total, primary)
        out.status = "FINISHED" if out.finished else "FAILED"
    except (RunInterrupted, KeyboardInterrupt) as exc:
        out.status = "KILLED"
        why = f"{exc}; " if str(exc) else ""  # the child's own message names its checkpoint
        hint = f"; {stop_hint}" if stop_hint else ""
        stopped = RunInterrupted(f"{why}the {what} stopped after {len(out.finished)} of {total}{hint}")
        stopped.run_id = getattr(exc, "run_id", "")  # the child run to resume
        raise stopped from None
    except BaseException:
        out.status = "FAILED"
        raise
    return out


def _settle(run: ChildRun, keep_going: bool, console: Console, outcome: Callable[[], Any]) -> None:
    """Record a child's result, or its failure when the others are to go on (a user's mistake
    found only by the run itself, a diverging loss, a dead process)."""
    try:
        run.result = outcome()
    except RunInterrupted:
        raise
    except Hw3Error as exc:
        if not keep_going:
            raise
        console.print(f"[red]failed:[/] {escape(run.child.label)}: {escape(str(exc))}", highlight=False)
        run.error = str(exc)


def _say_done(console: Console, run: ChildRun, n: int, total: int, primary: str) -> None:
    from runner.progress import fmt_value

    result = run.result
    if not isinstance(result, RunResult):
        return
    value = result.metrics.get(primary)
    shown = f"{primary} {fmt_value(primary, value)}" if value is not None else result.status
    console.print(f"({n} of {total}) {escape(run.child.label)}: {shown}  run {result.run_id}", highlight=False)


@dataclass
class SeedsResult:
    parent_run_id: str
    children: list[RunResult]
    summary: dict[str, float]  # `{metric}/mean` and `{metric}/std`, as logged on the parent
    keys: list[str]  # the metrics summarised, the primary one first


def run_seeds(
    req: RunRequest, seeds: list[int], console: Console | None = None, executor: Executor | None = None
) -> SeedsResult:
    """`hw3 run --seeds`: one child run per seed under a parent run that logs each summary
    metric's mean and std. A failed seed ends the whole (its error is the command's). The seeds
    run one after another here, or as tasks of `executor` (a Slurm job array)."""
    from runner.runs.plugins import get_manager

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
    )
    children = [
        Child(
            RunWork(dataclasses.replace(req, overrides=[*req.overrides, ("seed", seed)], run_name=None)), f"seed {seed}"
        )
        for seed in seeds
    ]
    summary: dict[str, float] = {}
    keys: list[str] = []

    def summarize(out: FanOut) -> Summary | None:
        if not out.finished:
            return None
        keys[:] = summary_keys(method_cls, out.finished)
        summary.update(aggregate(out.finished, keys))
        return Summary(summary)

    out = fan_out(
        children, parent=parent, summarize=summarize, keep_going=False, what="seeds",
        primary=method_cls.primary_metric, console=console, executor=executor,
    )  # fmt: skip
    return SeedsResult(out.parent_run_id, out.finished, summary, keys)
