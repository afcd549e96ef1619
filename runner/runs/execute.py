"""One `hw3 run`: plan -> prepare (data, method, context) -> open the run record -> engine.

The data flows one way, and each step is done once: `runner.runs.plan` decides, `runner.runs.prepare`
builds, the tracker's `open` is the only place the MLflow run begins and ends, `engine.fit` trains.
Nothing here knows a particular method or dataset.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from runner import record
from runner.config import ResolvedConfig
from runner.errors import MadeElsewhere, RunInterrupted
from runner.runs.plan import Plan, RunRequest, make_plan
from runner.runs.plugins import get_manager

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

    from runner.devices import Compute
    from runner.distributed import Dist
    from runner.engine import EarlyStop
    from runner.runs.prepare import Prepared
    from runner.tracking import RunHandle, Tracker

__all__ = ["RunRequest", "RunResult", "execute"]


@dataclass
class RunResult:
    run_id: str
    experiment: str
    status: str
    metrics: dict[str, float]
    tracking_uri: str
    checkpoint: str
    resolved: ResolvedConfig
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase (engine.FitResult)
    steps: int = 0  # optimisation steps this call took
    history: list[dict[str, float]] = field(default_factory=list)  # each epoch's metrics
    plan: Plan | None = None
    link: str = ""  # the experiment's runs table in the MLflow UI
    run_link: str = ""  # this run's page there
    stopped_early: str = ""  # why it ended before its last epoch, if it did

    @property
    def primary_metric(self) -> str:
        return self.plan.method_cls.primary_metric if self.plan else "target_acc"


def execute(
    req: RunRequest | Plan, console: Console | None = None, *, early_stop: EarlyStop | None = None
) -> RunResult:
    """Run a method to the end (or to an interruption); raises Hw3Error subclasses on failure.
    `early_stop` may end it after an epoch, finished (a tuner's pruner): `engine.fit` says how."""
    import torch

    from runner.distributed import init, shutdown
    from runner.tracking import Tracker

    console = console or Console()
    manager = get_manager()
    tracker = Tracker()
    plan = req if isinstance(req, Plan) else make_plan(req, manager, tracker.store)
    device, compute = _device(plan)
    threads_before = torch.get_num_threads()
    dist, device = init(device)
    trained: _Training | None = None
    try:
        # Leaving this block with an exception passes it to every context entered in it: the run
        # record sees it and ends the run FAILED or KILLED, never FINISHED.
        with contextlib.ExitStack() as stack:
            trained = _Training(plan, tracker, console, dist, device, compute)
            result = trained.run(stack, early_stop)
    except MadeElsewhere:  # another process's run of this suite item goes on: this one was never a result
        if trained is not None and trained.handle is not None:
            tracker.store.client.delete_run(trained.handle.run_id)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C before training began: no checkpoint yet
        run_id = trained.handle.run_id if trained and trained.handle else ""
        stopped = RunInterrupted(
            f"interrupted before training started; run {run_id} is marked KILLED and has no checkpoint yet"
            if run_id
            else "interrupted before the run started; nothing was saved"
        )
        raise stopped from None
    finally:
        shutdown(dist)
        torch.set_num_threads(threads_before)  # a caller in the same process (a sweep, a test) keeps its own
    return result


def _device(plan: Plan) -> tuple[torch.device, Compute]:
    """The run's device and how it computes there (precision, channels-last, CUDA graphs)."""
    import torch

    from runner.devices import choose_compute, pick_device

    s = plan.resolved.settings
    device = pick_device(s.device)
    compute = choose_compute(device, s.precision, s.channels_last, s.cuda_graphs)
    if device.type == "cuda" and device.index is not None:
        # The current device too, so whatever asks for "cuda" (a generator, a plugin's tensor,
        # synchronize) lands on this run's GPU, not GPU 0 (runs spread over GPUs by --workers).
        torch.cuda.set_device(device)
    return device, compute


class _Training:
    """One process's part of a run, inside the block whose exit ends the run record: data, the
    record, the locks, the engine."""

    def __init__(
        self, plan: Plan, tracker: Tracker, console: Console, dist: Dist, device: torch.device, compute: Compute
    ) -> None:
        self.plan, self.tracker, self.dist, self.device, self.compute = plan, tracker, dist, device, compute
        self.console = console if dist.is_main else Console(file=io.StringIO())  # rank 0 speaks for the group
        self.handle: RunHandle | None = None

    def run(self, stack: contextlib.ExitStack, early_stop: EarlyStop | None) -> RunResult:
        import torch

        from runner.checkpoint import RunLock, checkpoint_path
        from runner.distributed import broadcast_object
        from runner.engine import StopFlag, fit
        from runner.runs.prepare import prepare
        from runner.sinks import NullSink

        plan, tracker, dist, console = self.plan, self.tracker, self.dist, self.console
        s = plan.resolved.settings
        if plan.resume and dist.is_main:  # refused while another process still trains this run
            stack.enter_context(RunLock(checkpoint_path(s.checkpoint_dir, plan.resume.run_id).parent))
        if s.threads:
            torch.set_num_threads(s.threads)
        with console.status("loading data (decoded once, then cached)"):
            ready = prepare(plan, get_manager(), self.device, dist, self.compute)
        ctx = ready.ctx
        # From the moment the MLflow run exists, Ctrl-C and SIGTERM stop it cleanly (KILLED, a checkpoint).
        stop = stack.enter_context(StopFlag(console))
        self.handle = handle = stack.enter_context(_open(ready, tracker, self.compute)) if dist.is_main else None
        ctx.run_id = broadcast_object(handle.run_id if handle else "", dist)
        if handle is not None and plan.request.suite is not None and not plan.resume and not dist.enabled:
            self._stand_down_if_made_elsewhere(handle.run_id, plan.request.suite)
        if dist.is_main and not plan.resume:
            stack.enter_context(RunLock(checkpoint_path(s.checkpoint_dir, ctx.run_id).parent))
        self._announce(ctx.run_id, handle.experiment if handle else "")
        fitted = fit(
            ready.method,
            ctx,
            tracker if dist.is_main else NullSink(),
            hooks=get_manager(),
            console=console,
            resume=plan.resume.state if plan.resume else None,
            owner=plan.owner,
            stop=stop,
            early_stop=early_stop,
        )
        if handle is not None:  # the run page's description: its headline, in words
            tracker.set_tags({record.MLFLOW_NOTE: headline(plan, fitted.metrics, ctx.epoch)})
        return RunResult(
            ctx.run_id,
            handle.experiment if handle else "",
            fitted.status,
            fitted.metrics,
            tracker.uri,
            str(checkpoint_path(s.checkpoint_dir, ctx.run_id)),
            plan.resolved,
            seconds=fitted.seconds,
            steps=fitted.steps,
            history=fitted.history,
            stopped_early=fitted.stopped_early,
            plan=plan,
            link=tracker.store.link(handle.experiment_id) if handle else "",
            run_link=tracker.store.link(handle.experiment_id, ctx.run_id) if handle else "",
        )

    def _stand_down_if_made_elsewhere(self, run_id: str, item: record.SuiteItem) -> None:
        """Two `hw3 reproduce` processes sharing a store may start the same missing run; each
        looks once its own run exists, and the later one stands down (`execute` deletes its run)."""
        first = self.tracker.store.holder(item)
        if first is not None and first.info.run_id != run_id:
            raise MadeElsewhere(first.info.run_id, first.data.tags.get(record.PROCESS, ""))

    def _announce(self, run_id: str, experiment: str) -> None:
        from runner.devices import describe

        plan = self.plan
        where = describe(self.device) + (f" x {self.dist.world} processes" if self.dist.enabled else "")
        head = f"[bold]{plan.request.method}[/] on {plan.task.label}  device {where}, {self.compute.describe()}"
        self.console.print(f"{head}  run {run_id}  experiment {experiment}", highlight=False)


def run_record(ready: Prepared, compute: Compute) -> record.RunRecord:
    """What the run is, as MLflow will hold it."""
    from runner.checkpoint import checkpoint_path, process_tag
    from runner.devices import describe
    from runner.scheduler import job_tag

    plan, ctx = ready.plan, ready.ctx
    req = plan.request
    return record.RunRecord(
        method=req.method,
        task=plan.task,
        seed=plan.resolved.settings.seed,
        row=ready.method.report_row(),
        parent_run_id=req.parent_run_id or "",
        sweep_setting=req.sweep_setting,
        suite=req.suite,
        trial=req.trial,
        processes=ctx.dist.world,
        checkpoint_dir=str(checkpoint_path(plan.resolved.settings.checkpoint_dir, "-").parent.parent),  # absolute
        device=describe(ctx.device),
        compute=compute.describe(),
        process=process_tag(),  # a later hw3 command marks the run KILLED if this process dies unsaid
        slurm_job=job_tag(),
        settings=record.RunRecord.resumable(plan.resolved),
    )


@contextlib.contextmanager
def _open(ready: Prepared, tracker: Tracker, compute: Compute) -> Iterator[RunHandle]:
    """Open the run's record (or reopen the one being resumed) for the block: tags, params,
    config.json and the checkpoint's place; ended with the block's outcome."""
    from runner.checkpoint import checkpoint_path

    plan = ready.plan
    rec = run_record(ready, compute)
    with tracker.open(
        plan.experiment,
        plan.run_name,
        rec,
        params=rec.params(plan.resolved),
        config=plan.resolved.to_dict(),
        resume=plan.resume.run_id if plan.resume else "",
        columns=view_columns(plan),
    ) as handle:
        if not plan.resume:
            # Shown in the UI; resuming never reads it.
            tracker.set_tags({record.CHECKPOINT: str(checkpoint_path(rec.checkpoint_dir, handle.run_id))})
        yield handle


def headline(plan: Plan, metrics: dict[str, float], epochs: int) -> str:
    """`dann on mnist:mnistm: target_acc 91.9% after 30 epochs (source_acc 98.5%, ...)`."""
    from runner.progress import fmt_value

    shown = [k for k in view_columns(plan) if k in metrics]
    if not shown:
        return f"{plan.request.method} on {plan.task.label}: {epochs} epochs"
    first, rest = shown[0], ", ".join(f"{k} {fmt_value(k, metrics[k])}" for k in shown[1:])
    what = f"{plan.request.method} on {plan.task.label}"
    line = f"{what}: {first} {fmt_value(first, metrics[first])} after {epochs} epochs"
    return f"{line} ({rest})" if rest else line


def view_columns(plan: Plan) -> tuple[str, ...]:
    """The metrics the experiment's runs table shows: the method's headline first."""
    cls = plan.method_cls
    extra = ("target_val_acc", "source_acc") if cls.kind == "adapt" else cls.summary_metrics
    return tuple(dict.fromkeys([cls.primary_metric, *extra]))
