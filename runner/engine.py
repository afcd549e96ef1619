"""The one owner of a run's life: setup, epochs, evaluation, per-epoch images, summary metrics,
figures and the logged model, with checkpoints, exact resume, the NaN guard and Ctrl-C.

Methods say what one step does; `fit` does everything around it, writing through a `Sink` (the
MLflow tracker, or memory), so each method gets all of this for free.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from rich.console import Console

from runner import record
from runner.batches import BatchStream
from runner.checkpoint import TrainState, checkpoint_path, save
from runner.context import Batch, Labeled, RunContext
from runner.distributed import any_process, average_values, broadcast_modules, broadcast_object
from runner.errors import Hw3Error, RunFailed, RunInterrupted
from runner.method import Method
from runner.progress import Reporter
from runner.seeding import rng_state, seed_everything, set_rng_state
from runner.sinks import Sink, plain


class NonFiniteLoss(RunFailed):
    pass


class Hooks(Protocol):
    """The lifecycle hooks a run calls (the plugin manager implements them through pluggy)."""

    def run_start(self, run: RunContext) -> None: ...

    def epoch_end(self, run: RunContext, epoch: int, metrics: dict[str, float]) -> None: ...

    def run_end(self, run: RunContext, status: str, metrics: dict[str, float]) -> None: ...


class NoHooks:
    def run_start(self, run: RunContext) -> None:
        pass

    def epoch_end(self, run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def run_end(self, run: RunContext, status: str, metrics: dict[str, float]) -> None:
        pass


@dataclass
class FitResult:
    status: str  # FINISHED (the others raise)
    metrics: dict[str, float]  # the last epoch's, with the summary and selected metrics
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase: setup, train, evaluate, finish
    steps: int = 0  # optimisation steps taken in this call (not counting those before a resume)
    stopped_early: str = ""  # why `early_stop` ended the run before its last epoch, if it did


# Asked after each epoch (rank 0's answer holds for every process): a reason to end the run there,
# finished, with its summary, figures and model, or "" to go on. A tuner's pruner is one.
EarlyStop = Callable[["RunContext", dict[str, float]], str]


def headline_first(metrics: dict[str, float], method: Method) -> dict[str, float]:
    """The order a person reads an epoch's metrics in (and MLflow's run page lists them in): the
    method's primary metric, its other evaluation metrics, then the training and timing ones."""
    return dict(sorted(metrics.items(), key=lambda kv: (kv[0] != method.primary_metric, "/" in kv[0])))


def steps_per_epoch(method: Method, ctx: RunContext) -> int:
    """An epoch is one pass over the largest training split the method draws from (by all processes)."""
    per_step = ctx.settings.batch_size * ctx.dist.world
    return max(len(ctx.domains[r].train) // per_step for r in method.train_domains())


def fit(
    method: Method,
    ctx: RunContext,
    sink: Sink,
    *,
    hooks: Hooks | None = None,
    console: Console | None = None,
    resume: TrainState | None = None,
    owner: str = "",
    stop: StopFlag | None = None,
    early_stop: EarlyStop | None = None,
) -> FitResult:
    """Run `method` to the end: setup, the run-start hook, the remaining epochs (train, evaluate,
    end of epoch), then summary metrics, figures and the logged model. The run's status goes to
    the run-end hook whatever happens; the run itself is ended by whoever opened it (the
    tracker's `open`, or `runner.sinks.ending` around a sink of one's own). Raises `RunInterrupted` after Ctrl-C or
    SIGTERM (a checkpoint saved), `RunFailed` when a loss is not finite or the method raises
    (`owner` names the method and its plugin in that message). `stop` is a `StopFlag` the caller
    put in place earlier (so a signal during its own work is not lost); fit makes its own else.
    `early_stop` may end the run after any epoch (`EarlyStop`); the reason is tagged on the run."""
    loop = _Loop(method, ctx, sink, hooks or NoHooks(), console or Console(), resume)
    status = "FAILED"
    try:
        with contextlib.ExitStack() as stack:
            stop = stop or stack.enter_context(StopFlag(loop.console))
            loop.run(stop, early_stop)
        status = "FINISHED"
    except RunInterrupted as exc:
        status = "KILLED"
        exc.run_id = ctx.run_id
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        aborted = RunInterrupted(f"aborted; the checkpoint of the last finished epoch is kept at {loop.ckpt}")
        aborted.run_id = ctx.run_id
        raise aborted from None
    except NonFiniteLoss as exc:
        sink.log_text(f"{exc}\n", "error.txt")
        sink.set_tags({record.ERROR: str(exc)[:5000]})
        raise
    except Hw3Error as exc:
        if tb := getattr(exc, "traceback", None):  # a plugin's lifecycle hook raised
            sink.log_text(tb, "error.txt")
        raise
    except Exception as exc:
        sink.log_text(traceback.format_exc(), "error.txt")
        raise RunFailed(
            f"{owner or f'method {method.name!r}'} raised {type(exc).__name__}: {exc}; "
            f"traceback saved as error.txt in run {ctx.run_id}"
        ) from exc
    finally:
        loop.run_end(status)
    steps = ctx.step - loop.first_step
    return FitResult(status, loop.metrics, loop.history, dict(loop.seconds), steps, loop.stopped_early)


class _Loop:
    """A run's state between the phases `fit` calls, each a method here."""

    def __init__(
        self, method: Method, ctx: RunContext, sink: Sink, hooks: Hooks, console: Console, resume: TrainState | None
    ) -> None:
        self.method, self.ctx, self.sink, self.hooks, self.console = method, ctx, sink, hooks, console
        self.resume = resume
        self.ckpt = checkpoint_path(ctx.settings.checkpoint_dir, ctx.run_id)
        self.streams: dict[str, BatchStream] = {}
        self.sums: dict[str, float] = {}  # the unfinished epoch's step values, summed
        self.in_sums = 0  # how many of its steps those sums hold
        self.window: dict[str, float] = {}  # the same since the last step-level log
        # Steps taken but not yet read back: (index in epoch, what train_step returned, tensors included).
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.history = ctx.history  # each finished epoch's metrics, which methods see too
        self.metrics: dict[str, float] = {}
        self.start_in_epoch = 0
        self.seconds: dict[str, float] = {}  # wall time per phase, summed over epochs
        self.first_step = resume.step if resume is not None else 0
        self.stopped_early = ""
        self.epoch_t0 = time.perf_counter()

    @contextlib.contextmanager
    def clock(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def run(self, stop: StopFlag, early_stop: EarlyStop | None) -> None:
        """The phases in order: setup, the remaining epochs (train, evaluate, end of epoch, the
        early-stop question), then the finish."""
        ctx, clock = self.ctx, self.clock
        with clock("setup"):
            self.setup()
        with Reporter(self.console, ctx.settings.epochs, ctx.steps_per_epoch, ctx.step) as report:
            while ctx.epoch < ctx.settings.epochs:
                with clock("train"):
                    self.train_epoch(stop, report)
                with clock("evaluate"):
                    metrics = self.evaluate_epoch()
                self.end_epoch(metrics, stop, report)
                if early_stop is not None and ctx.epoch < ctx.settings.epochs:
                    self.stopped_early = self.ask(early_stop, metrics)
                    if self.stopped_early:
                        break
        stop.finishing = True
        with clock("finish"):
            self.finish()

    def run_end(self, status: str) -> None:
        """The run-end hook with the run's status, whatever happened; its own error matters only
        when the run finished (otherwise the run's error is the one to show)."""
        try:
            if self.ctx.dist.is_main:
                self.hooks.run_end(self.ctx, status, self.metrics)
        except Hw3Error as exc:
            if status == "FINISHED":
                raise
            self.console.print(f"[yellow]warning: {exc}")

    # -- phases ------------------------------------------------------------------------------
    def setup(self) -> None:
        method, ctx, s = self.method, self.ctx, self.ctx.settings
        if ctx.device.type == "cpu":
            # Subnormal floats make x86 arithmetic ~100x slower; adversarial training drifts into
            # them (a DCGAN epoch went from 7 s to 40 s). Flushing them to zero costs no accuracy.
            torch.set_flush_denormal(True)
        seed_everything(s.seed)
        ctx.steps_per_epoch = steps_per_epoch(method, ctx)  # before setup: schedules use total_steps
        method.setup(ctx)
        self.streams = {
            role: BatchStream(
                ctx.domains[role].train,
                s.batch_size,
                ctx.generator(f"batches/{role}"),
                labels=labels,
                channels_last=ctx.channels_last,
                rank=ctx.dist.rank,
                world=ctx.dist.world,
            )
            for role, labels in method.train_domains().items()
        }
        if self.resume is not None:
            self._restore(self.resume)
        if ctx.dist.enabled:
            broadcast_modules(_modules(method), ctx.dist)  # identical replicas from the first step
        if ctx.dist.is_main:
            self.hooks.run_start(ctx)

    def train_epoch(self, stop: StopFlag, report: Reporter) -> None:
        method, ctx, s = self.method, self.ctx, self.ctx.settings
        for i in range(self.start_in_epoch, ctx.steps_per_epoch):
            batch = Batch({role: Labeled(*st.next()) for role, st in self.streams.items()})
            if ctx.compute.graphs:  # CUDA graph outputs of the step before may be overwritten from here on
                torch.compiler.cudagraph_mark_step_begin()
            out = method.train_step(ctx, batch)
            ctx.step += 1
            self.pending.append((i, out))  # tensors stay on the device: the step reads nothing back
            # One process stops at the step it was asked to; processes share the request at the
            # read-backs (every log_every steps and the epoch's last), so all stop at the same step.
            stopping = stop.requested and not ctx.dist.enabled
            log_now = ctx.step % s.log_every == 0
            if log_now or i + 1 == ctx.steps_per_epoch:
                stopping = self._flush(stop.requested)
            if log_now:
                self.sink.log_metrics({f"step/{k}": v / s.log_every for k, v in self.window.items()}, ctx.step)
                self.window.clear()
            if report.wants(ctx.step):  # the values as of the last read: showing them waits for nothing
                report.step(ctx.step, {k: v / max(self.in_sums, 1) for k, v in self.sums.items()})
            if stopping:
                self._flush()
                self._save(i + 1)
                raise RunInterrupted(f"interrupted at epoch {ctx.epoch + 1}, step {i + 1}; checkpoint {self.ckpt}")
        self.start_in_epoch = 0

    def evaluate_epoch(self) -> dict[str, float]:
        method, ctx = self.method, self.ctx
        metrics = {f"train/{k}": v / ctx.steps_per_epoch for k, v in self.sums.items()}
        self.sums, self.in_sums = {}, 0
        if ctx.dist.enabled:
            broadcast_modules(_modules(method), ctx.dist)  # rank 0's BN statistics
        if ctx.dist.is_main:
            with torch.no_grad():
                metrics.update(method.evaluate(ctx))
        # Rounded once, here: what the run returns, what selection reads and what MLflow holds agree.
        return broadcast_object({k: plain(v) for k, v in metrics.items()}, ctx.dist)

    def end_epoch(self, metrics: dict[str, float], stop: StopFlag, report: Reporter) -> None:
        ctx = self.ctx
        ctx.epoch += 1
        self.history.append(metrics)
        self.metrics = metrics
        now = time.perf_counter()
        self.sink.log_metrics(headline_first({**metrics, "time/epoch_s": now - self.epoch_t0}, self.method), ctx.epoch)
        self.epoch_t0 = now
        self._save(0)
        report.epoch_end(ctx.epoch, metrics)
        if ctx.dist.is_main:
            for key, image in self.method.images(ctx).items():
                self.sink.log_image(image, key, ctx.epoch)
            self.hooks.epoch_end(ctx, ctx.epoch, metrics)
        stop.guard()
        stopping = stop.requested
        if ctx.dist.enabled:  # a request during evaluation: all stop here, or none
            stopping = any_process(stopping, ctx.dist, ctx.device)
        if stopping:
            raise RunInterrupted(f"interrupted after epoch {ctx.epoch}; checkpoint {self.ckpt}")

    def ask(self, early_stop: EarlyStop, metrics: dict[str, float]) -> str:
        """`early_stop`'s answer after this epoch, rank 0's for every process; tagged on the run."""
        ctx = self.ctx
        why = early_stop(ctx, metrics) if ctx.dist.is_main else ""
        if ctx.dist.enabled:
            why = "stopped early" if any_process(bool(why), ctx.dist, ctx.device) and not why else why
        if why:
            self.sink.set_tags({record.STOPPED_EARLY: f"after epoch {ctx.epoch}: {why}"[:5000]})
            self.console.print(f"[yellow]stopping after epoch {ctx.epoch}: {why}", highlight=False)
        return why

    def finish(self) -> None:
        """Summary metrics and selections, figures and the model, once training is over (rank 0;
        the other processes hold the same model)."""
        from runner.figures import curves_figure

        method, ctx = self.method, self.ctx
        if not ctx.dist.is_main:
            return
        with self.console.status("final metrics, figures and the model"):
            final = {k: plain(v) for k, v in method.summarize(ctx).items()}
            self.metrics = {**self.metrics, **final}
            figures = {"curves.png": curves_figure(self.history, f"{ctx.resolved.method} on {ctx.task.label}")}
            figures.update(method.figures(ctx))
            for name, fig in figures.items():
                self.sink.log_figure(fig, f"figures/{name}")
            for name, table in method.tables(ctx).items():
                self.sink.log_table(table, f"tables/{name}.json")
            for path, data in method.artifacts(ctx).items():
                self.sink.log_bytes(data, path)
            model = method.inference_model()
            if model is not None:
                self.sink.log_model(model, method.inference_example(ctx), step=ctx.epoch)
            picked, summary = record.split_selection(final)
            if picked:  # tags and a table: as one-point metrics they would come before the curves
                self.sink.set_tags(record.selection_tags(picked))
                self.sink.log_table(record.selection_table(picked), record.SELECTION_TABLE)
            if summary:  # after the model: the tracker links them to it
                self.sink.log_metrics(summary, ctx.epoch)

    # -- helpers -----------------------------------------------------------------------------
    def _flush(self, stop: bool = False) -> bool:
        """Read the pending steps' values back to the host, one transfer for all of them (a method
        returns tensors, so its step never waits for the device), and sum them in step order,
        stopping the run at the first value that is not finite. Returns whether to stop: `stop`,
        this process's request, or in a distributed run whether any process asked, shared in the
        same all-reduce that averages the values (so every process calls this at the same steps)."""
        if not self.pending:
            return stop
        tensors = [_plain(v) for _, out in self.pending for v in out.values() if isinstance(v, torch.Tensor)]
        numbers = [float(v) for _, out in self.pending for v in out.values() if not isinstance(v, torch.Tensor)]
        if self.ctx.dist.enabled:
            values, stop = average_values(tensors, numbers, stop, self.ctx.dist, self.ctx.device)
            host, rest = iter(values[: len(tensors)]), iter(values[len(tensors) :])
        else:
            host, rest = iter(torch.stack(tensors).tolist() if tensors else []), iter(numbers)
        for i, out in self.pending:
            self._add({k: next(host) if isinstance(v, torch.Tensor) else next(rest) for k, v in out.items()}, i)
        self.in_sums += len(self.pending)
        self.pending.clear()
        return stop

    def _add(self, out: dict[str, float], i: int) -> None:
        """Sum a step's values, stopping the run at the first that is not finite."""
        for key, value in out.items():
            if not math.isfinite(value):
                kept = (
                    f"the last good checkpoint is kept ({self.ckpt})"
                    if self.ckpt.exists()
                    else "no checkpoint was written yet (it stopped before the first epoch ended)"
                )
                raise NonFiniteLoss(
                    f"'{key}' became {value} at epoch {self.ctx.epoch + 1}, step {i + 1}; the run is stopped "
                    f"and {kept}. Lower the learning rate (--set lr=...) or try another seed"
                )
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.window[key] = self.window.get(key, 0.0) + value

    def _state(self, step_in_epoch: int) -> TrainState:
        ctx = self.ctx
        return TrainState(
            method=self.method.state_dict(),
            streams={role: st.state_dict() for role, st in self.streams.items()},
            rng=rng_state(),
            epoch=ctx.epoch,
            step=ctx.step,
            step_in_epoch=step_in_epoch,
            sums=dict(self.sums),
            history=list(self.history),
            resolved=ctx.resolved.to_dict(),
            scaler=ctx.scaler.state_dict() if ctx.scaler is not None else None,
        )

    def _save(self, step_in_epoch: int) -> None:
        if self.ctx.dist.is_main:  # every replica holds the same state; rank 0 writes it
            save(self.ckpt, self._state(step_in_epoch))

    def _restore(self, state: TrainState) -> None:
        ctx = self.ctx
        self.method.load_state_dict(state.method)
        for role, st in state.streams.items():
            self.streams[role].load_state_dict(st)
        set_rng_state(state.rng)
        ctx.epoch, ctx.step = state.epoch, state.step
        self.start_in_epoch, self.sums = state.step_in_epoch, dict(state.sums)
        self.in_sums = state.step_in_epoch
        self.history[:] = state.history
        self.metrics = self.history[-1] if self.history else {}
        if ctx.scaler is not None and state.scaler:
            ctx.scaler.load_state_dict(state.scaler)


class StopFlag:
    """First Ctrl-C (or SIGTERM) asks the loop to stop at the next step; a second one aborts.

    `hw3 run` puts it in place as soon as it has planned the run, before loading data, so a
    signal at any moment of a run stops it the same way (the step loop sees the request at its
    next step, even the first); `guard` puts it back each epoch should a library have replaced it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, console: Console) -> None:
        self.requested = False
        self.finishing = False  # the run's end: figures and the model are written, then it ends
        self.console = console
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def guard(self) -> None:
        for sig in self._old:
            if signal.getsignal(sig) != self._handle:
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.finishing:
            self.console.print("[yellow]finishing: writing the figures and the model (Ctrl-C again to abort)")
        else:
            self.console.print("[yellow]stopping after this step and saving a checkpoint (Ctrl-C again to abort)")


def _plain(value: torch.Tensor) -> torch.Tensor:
    """A logged value as a float tensor outside autograd, with no op for one that already is
    (each op counts: on a GPU it is a kernel launch)."""
    if value.requires_grad:
        value = value.detach()
    return value if value.dtype == torch.float32 else value.float()


def _modules(method: Method) -> list[torch.nn.Module]:
    """The method's networks that every process holds alike: not those named with a leading `_`,
    derived from the others and (like DANN's AdaBN copies, made in `evaluate`) on rank 0 alone."""
    return [v for k, v in vars(method).items() if isinstance(v, torch.nn.Module) and not k.startswith("_")]
