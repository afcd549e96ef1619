"""Runs side by side: a pool of spawned processes, each running one `hw3 run` at a time, the CPU
cores split between them and, on several GPUs, the processes spread over them round robin.
`hw3 sweep --workers`, `hw3 run --seeds` (through `fanout`) and `hw3 reproduce --workers` use it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from runner.errors import RunFailed, RunInterrupted
from runner.plan import RunRequest
from runner.run import RunResult, execute


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
    setting is `cuda` or `auto` and several GPUs are visible, the processes spread over them
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
    where = f", the processes spread round robin over {gpus} GPUs" if any(spread) else ""
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
        outcome: Callable[[], RunResult] = future.result
        if isinstance(exc, BrokenProcessPool):  # a worker died (out of memory, a crash): no traceback

            def outcome() -> RunResult:
                raise RunFailed(
                    f"{self.jobs[i].label}: a worker process died before this run ended ({exc}); rerun the same "
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
        raise RunInterrupted(
            "interrupted outside training (before it began, or while it was ending); rerun the same command to "
            "redo or resume it"
        ) from None
    finally:
        _worker["busy"] = False
    return dataclasses.replace(result, plan=None)  # what crosses back to the parent process: plain data
