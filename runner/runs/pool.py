"""hw3's one process pool, and its one stop policy, for every command that runs many things at
once: `hw3 run --seeds`, `hw3 sweep` and `hw3 reproduce` (through `runner.runs.parent`) and the
workers of `hw3 tune`. A piece of work is a `Work`: a picklable callable given its `Placement`
(threads, device, console, whether to stop); `RunWork` is one `hw3 run`.

The policy, in one place: Ctrl-C (which reaches the whole process group) or a SIGTERM to the
parent (passed on to each process) lets each busy process stop its work (a run saves its
checkpoint and ends KILLED), starts nothing new and waits for them before raising
RunInterrupted; an idle process ignores the signal, so the pool stays whole. A process that dies
(out of memory, killed) is a one-line RunFailed for the work it held, never a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from runner.errors import RunFailed, RunInterrupted
from runner.runs.execute import RunResult, execute
from runner.runs.plan import RunRequest


@dataclass
class Placement:
    """Where one piece of work runs: its console, its share of the CPU threads (0: leave torch's
    choice), its GPU where the pool spreads work over several ("": its own device setting), and
    `should_stop()`, true once the stop was asked for (work that loops checks it between items)."""

    console: Console
    threads: int = 0
    device: str = ""
    pooled: bool = False  # in a process of its own (the pool's, a Slurm task's): output summed up, not live
    should_stop: Callable[[], bool] = lambda: False
    parent_pid: int = 0  # the pool's parent process: once it is gone, work that loops starts nothing new


class Work(Protocol):
    """A piece of work for the pool; plain data, so it crosses to a spawned process."""

    def __call__(self, place: Placement) -> Any: ...


@dataclass
class RunWork:
    """One `hw3 run`: its result, plain data (no plan), comes back."""

    request: RunRequest

    def __call__(self, place: Placement) -> RunResult:
        req, extra = self.request, list[tuple[str, Any]]()
        # A resumed run's settings are its own (OMP_NUM_THREADS, set in each process, holds).
        if place.threads and not req.resume and not any(k == "threads" for k, _ in req.overrides):
            extra.append(("threads", place.threads))
        if place.device:
            extra.append(("device", place.device))
        if extra:
            req = dataclasses.replace(req, overrides=[*req.overrides, *extra])
        result = execute(req, place.console)
        return dataclasses.replace(result, plan=None) if place.pooled else result

    def under(self, parent_run_id: str, experiment: str) -> RunWork:
        """The same run as a child of `parent_run_id`, in the parent's experiment."""
        return RunWork(dataclasses.replace(self.request, parent_run_id=parent_run_id, experiment=experiment))

    def resumed(self, run_id: str) -> RunWork:
        """What goes on from this run's checkpoint (a Slurm task requeued after a pre-emption)."""
        req = self.request
        device = [(k, v) for k, v in req.overrides if k == "device"]
        return RunWork(RunRequest(req.method, resume=run_id, data_root=req.data_root, overrides=device))


@dataclass
class Job:
    """One piece of work for `side_by_side`: the work, how messages name it, and its device
    setting as resolved (`auto`, `cuda`, `cuda:1`, `cpu`), which says whether it takes a GPU of
    its own."""

    work: Work
    label: str
    device: str = "auto"


Ended = Callable[[int, Callable[[], Any]], None]


class _NotStarted(Exception):
    """Work a process took up after the stop was asked for: it never began."""


def side_by_side(jobs: Sequence[Job], workers: int, console: Console, ended: Ended) -> None:
    """Run `jobs` in `workers` processes at once (spawned: a fresh interpreter each, no threads
    or torch state inherited), the CPU cores split between them and, where their device setting
    is `cuda` or `auto` and several GPUs are visible, the processes spread over them round robin
    (`runner.runs.placement`). As each job ends, in the order they end, the parent calls
    `ended(index, outcome)`, where `outcome()` returns the job's result or raises its error.

    Stops as the module's docstring says; RunInterrupted names the first stopped run. An error
    out of `ended` (a failure that ends the whole) also lets nothing new start, waits for the
    running ones, then is raised."""
    import multiprocessing
    import signal
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from runner.runs.placement import cores, spreads, threads_per_run, visible_gpus

    workers = max(1, min(workers, len(jobs)))
    threads = threads_per_run(workers, cores())
    gpus = visible_gpus() if any(j.device.strip().lower() in ("cuda", "auto") for j in jobs) else 0
    spread = [spreads(j.device, gpus) for j in jobs]
    where = f", the processes spread round robin over {gpus} GPUs" if any(spread) else ""
    noun = "runs" if all(isinstance(j.work, RunWork) for j in jobs) else "jobs"
    console.print(
        f"{len(jobs)} {noun}, {workers} at a time, {threads} thread(s) each{where}; each one's output is summed up "
        "when it ends",
        highlight=False,
    )
    context = multiprocessing.get_context("spawn")
    slots, stop = context.SimpleQueue(), context.Event()
    for slot in range(workers):  # each process takes one as it starts: its GPU, round robin
        slots.put(slot)
    terminated: list[int] = []

    def on_term(signum: int, frame: Any) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    initargs = (threads, slots, stop, gpus)
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=initargs) as pool:
            futures = [pool.submit(_perform, j.work, s) for j, s in zip(jobs, spread, strict=True)]
            drain = _Drain(futures, stop, jobs, console, ended)
            left = set(futures)
            while left:
                try:
                    done, _ = wait(left, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=futures.index):
                        drain.settle(future)
                        left.discard(future)  # after: a Ctrl-C inside `ended` leaves it to settle again
                except (RunInterrupted, KeyboardInterrupt):  # let the running ones save their checkpoints
                    drain.interrupted = True
                    drain.halt()
                    if terminated:  # a SIGTERM to this process alone: pass it on
                        _signal_all(pool, signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)
    drain.raise_any()


def _signal_all(pool: Any, signum: int) -> None:
    import contextlib
    import os

    for process in list(getattr(pool, "_processes", {}).values()):  # the executor's own table of them
        if process.is_alive() and process.pid:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(process.pid, signum)


@dataclass
class _Drain:
    """What `side_by_side` learns as its jobs end."""

    futures: list[Future[Any]]
    stop: Any  # a multiprocessing Event: set, nothing new starts
    jobs: Sequence[Job]
    console: Console
    ended: Ended
    stopped: list[RunInterrupted] = field(default_factory=list)  # work a signal stopped, checkpoints saved
    error: BaseException | None = None  # the first error out of `ended`
    interrupted: bool = False  # Ctrl-C or SIGTERM reached this process

    def halt(self) -> None:
        """Nothing new starts; the running ones go on (the signal reached them on its own)."""
        self.stop.set()
        for future in self.futures:
            future.cancel()

    def settle(self, future: Future[Any]) -> None:
        i = self.futures.index(future)
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or isinstance(exc, _NotStarted):
            return
        if isinstance(exc, RunInterrupted):
            self.console.print(f"[yellow]stopped:[/] {escape(self.jobs[i].label)}: {escape(str(exc))}", highlight=False)
            self.stopped.append(exc)
            self.halt()
            return
        outcome: Callable[[], Any] = future.result
        if isinstance(exc, BrokenProcessPool):  # a process died (out of memory, a crash): no traceback

            def outcome() -> Any:
                raise RunFailed(
                    f"{self.jobs[i].label}: a worker process died before this ended ({exc}); rerun the same "
                    "command to redo what did not finish"
                )

        try:
            self.ended(i, outcome)
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


_worker: dict[str, Any] = {}  # in each process of the pool: its slot, the stop event, the GPUs


def _worker_init(threads: int, slots: Any, stop: Any, gpus: int) -> None:
    import os
    import signal

    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch starts its thread pool
    _worker.update(slot=slots.get(), stop=stop, gpus=gpus, busy=False, threads=threads)
    # A signal reaches an idle process too: it must not die (that breaks the pool), only a busy
    # one stops. While a run trains its own handler (engine.StopFlag) takes the signal instead.
    signal.signal(signal.SIGINT, _interrupt_if_busy)
    signal.signal(signal.SIGTERM, _interrupt_if_busy)


def _interrupt_if_busy(signum: int, frame: Any) -> None:
    if _worker.get("busy"):
        raise KeyboardInterrupt


def _perform(work: Work, spread: bool = False) -> Any:
    import io
    import os

    from runner.runs.placement import device_for

    stop = _worker["stop"]
    if stop.is_set():
        raise _NotStarted
    device = device_for("cuda", _worker["slot"], _worker["gpus"]) if spread else ""
    place = Placement(
        Console(file=io.StringIO()), _worker["threads"], device, pooled=True, should_stop=stop.is_set,
        parent_pid=os.getppid(),
    )  # fmt: skip
    _worker["busy"] = True
    try:
        return work(place)
    except (RunInterrupted, KeyboardInterrupt) as exc:
        stop.set()  # nothing new starts, even before the parent hears of it
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted(
            "interrupted outside training (before it began, or while it was ending); rerun the same command to "
            "redo or resume it"
        ) from None
    finally:
        _worker["busy"] = False
