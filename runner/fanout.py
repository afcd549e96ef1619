"""A parent MLflow run with child runs under it: what `hw3 run --seeds` and `hw3 sweep` share.

The parent is opened first (an unreachable store stops everything before any training), every
child is an ordinary `hw3 run` nested under it, and the parent ends with the children's summary
(mean and std of the metrics that matter) whatever happened: all finished, one failed, or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from runner.errors import ConfigError, RunFailed, RunInterrupted
from runner.plan import RunRequest, make_plan
from runner.record import ParentRecord
from runner.run import RunResult, execute
from runner.settings import SEED_MAX


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


def summary_keys(method_cls: type, results: Iterable[RunResult]) -> list[str]:
    """The metrics a parent reports: the method's primary metric, its `summary_metrics`, and every
    `selected/...` metric (each protocol's pick) its children logged."""
    keys = [method_cls.primary_metric, *method_cls.summary_metrics]
    found = sorted({k for r in results for k in r.metrics if k.startswith("selected/") and not k.endswith("/epoch")})
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
                    _settle(run, keep_going, console, lambda request=request: execute(request, console))
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


@dataclass
class Job:
    """One run for `side_by_side`: its request, how messages name it, and its device setting as
    resolved (`auto`, `cuda`, `cuda:1`, `cpu`), which says whether it takes a GPU of its own."""

    request: RunRequest
    label: str
    device: str = "auto"


Ended = Callable[[int, Callable[[], RunResult]], None]


class _NotStarted(Exception):
    """A run a worker took up after the stop was asked for: it never began."""


def side_by_side(jobs: Sequence[Job], workers: int, console: Console, ended: Ended) -> None:
    """Run `jobs` in `workers` processes at once (spawned: a fresh interpreter each, no threads
    or torch state inherited), the CPU cores split between them (a `threads` setting each, and
    OMP_NUM_THREADS for resumed runs, whose settings are their own) and, where their device
    setting is `cuda` or `auto` and several GPUs are visible, each process on its own GPU,
    round robin (`runner.workers`). As each run ends, in the order they end, the parent calls
    `ended(index, outcome)`, where `outcome()` returns the run's result or raises its error.

    Ctrl-C reaches every process of the group: each running run saves its checkpoint and ends
    KILLED, no further run starts, and this waits for them before raising RunInterrupted (which
    names the first stopped run). An error out of `ended` (a failed run that ends the whole)
    also lets no further run start, waits for the running ones, then is raised."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from runner.workers import cores, spreads, threads_per_run, visible_gpus

    workers = max(1, min(workers, len(jobs)))
    threads = threads_per_run(workers, cores())
    gpus = visible_gpus() if any(j.device.strip().lower() in ("cuda", "auto") for j in jobs) else 0
    spread = [spreads(j.device, gpus) for j in jobs]
    requests = [_with_threads(j.request, threads) for j in jobs]
    where = f", each process on its own GPU of {gpus}" if any(spread) else ""
    console.print(
        f"{len(jobs)} runs, {workers} at a time, {threads} thread(s) each{where}; each run's output is summed up "
        "when it ends",
        highlight=False,
    )
    context = multiprocessing.get_context("spawn")
    slots, stop = context.SimpleQueue(), context.Event()
    for slot in range(workers):  # each process takes one as it starts: its GPU, round robin
        slots.put(slot)
    initargs = (threads, slots, stop, gpus)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=initargs) as pool:
        futures = [pool.submit(_execute_quietly, r, s) for r, s in zip(requests, spread, strict=True)]
        drain = _Drain(futures, stop, jobs, console, ended)
        left = set(futures)
        while left:
            try:
                done, _ = wait(left, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.index):
                    drain.settle(future)
                    left.discard(future)  # after: a Ctrl-C inside `ended` leaves it to settle again
            except (RunInterrupted, KeyboardInterrupt):  # Ctrl-C: let the running ones save their checkpoints
                drain.interrupted = True
                drain.halt()
    drain.raise_any()


@dataclass
class _Drain:
    """What `side_by_side` learns as its runs end."""

    futures: list[Future[RunResult]]
    stop: Any  # a multiprocessing Event: set, no further run starts
    jobs: Sequence[Job]
    console: Console
    ended: Ended
    stopped: list[RunInterrupted] = field(default_factory=list)  # runs Ctrl-C stopped, with their checkpoints
    error: BaseException | None = None  # the first error out of `ended`
    interrupted: bool = False  # Ctrl-C reached this process

    def halt(self) -> None:
        """No further run starts; the running ones go on (a Ctrl-C reached them on its own)."""
        self.stop.set()
        for future in self.futures:
            future.cancel()

    def settle(self, future: Future[RunResult]) -> None:
        i = self.futures.index(future)
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or isinstance(exc, _NotStarted):
            return
        if isinstance(exc, RunInterrupted):
            self.console.print(f"[yellow]stopped:[/] {escape(self.jobs[i].label)}: {escape(str(exc))}", highlight=False)
            self.stopped.append(exc)
            self.halt()
            return
        try:
            self.ended(i, future.result)
        except (RunInterrupted, KeyboardInterrupt):
            raise
        except BaseException as failure:  # raised once the running ones have ended
            self.error = self.error or failure
            self.halt()

    def raise_any(self) -> None:
        if self.stopped or self.interrupted:
            first, n = next((e for e in self.stopped if e.run_id), None), len(self.stopped)
            out = RunInterrupted(f"{n} running run(s) saved a checkpoint and are marked KILLED" if n else "")
            out.run_id = first.run_id if first else ""
            raise out
        if self.error is not None:
            raise self.error


def _with_threads(request: RunRequest, threads: int) -> RunRequest:
    """The request with the cores' share as its `threads` setting, unless it gives its own or
    resumes a run (whose settings are its own: OMP_NUM_THREADS, set in each process, holds)."""
    if request.resume or any(k == "threads" for k, _ in request.overrides):
        return request
    return dataclasses.replace(request, overrides=[*request.overrides, ("threads", threads)])


_worker: dict[str, Any] = {}  # in each process of the pool: its slot, the stop event, the GPUs


def _worker_init(threads: int, slots: Any, stop: Any, gpus: int) -> None:
    import os
    import signal

    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch starts its thread pool
    _worker.update(slot=slots.get(), stop=stop, gpus=gpus, busy=False)
    # Ctrl-C reaches an idle process too: it must not die (that breaks the pool), only a busy
    # one stops. While a run trains its own handler (engine.StopFlag) takes the signal instead.
    signal.signal(signal.SIGINT, _interrupt_if_busy)


def _interrupt_if_busy(signum: int, frame: Any) -> None:
    if _worker.get("busy"):
        raise KeyboardInterrupt


def _execute_quietly(request: RunRequest, spread: bool = False) -> RunResult:
    import io

    from runner.workers import device_for

    if _worker.get("stop") is not None and _worker["stop"].is_set():
        raise _NotStarted
    if spread:
        device = device_for("cuda", _worker["slot"], _worker["gpus"])
        request = dataclasses.replace(request, overrides=[*request.overrides, ("device", device)])
    _worker["busy"] = True
    try:
        result = execute(request, Console(file=io.StringIO()))
    except (RunInterrupted, KeyboardInterrupt) as exc:
        if _worker.get("stop") is not None:  # no further run starts, even before the parent hears of it
            _worker["stop"].set()
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted("interrupted before the run started; nothing was saved") from None
    finally:
        _worker["busy"] = False
    return dataclasses.replace(result, plan=None)  # what crosses back to the parent process: plain data


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
