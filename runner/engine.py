"""The training loop every method runs in: batches, steps, evaluation, checkpoints, stopping.

Methods say what one step does; the engine owns everything around it, so each method gets
progress, checkpoints, exact resume, the NaN guard, Ctrl-C handling and logging for free.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.console import Console

from runner import checkpoint, distributed
from runner.config import ResolvedConfig, RunSettings
from runner.data import BatchStream, Split, batches
from runner.distributed import SINGLE, Dist
from runner.errors import RunFailed, RunInterrupted
from runner.method import Method
from runner.progress import Reporter


class Labeled(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor | None  # None for a domain whose labels the method may not use


class Batch(dict[str, Labeled]):
    """One training step's data: role ("source", "target" or "data") -> (x, y)."""


@dataclass
class Domain:
    """One dataset in a run, already on the device and in the run's common shape."""

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]


@dataclass
class RunContext:
    """What a method's hooks receive: config, device, data and where the run stands."""

    resolved: ResolvedConfig
    device: torch.device
    domains: dict[str, Domain]
    run_id: str = ""
    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps taken, over the whole run
    steps_per_epoch: int = 1
    scaler: Any = None
    extras: dict[str, Any] = field(default_factory=dict)  # for methods to keep figures' data
    dist: Dist = SINGLE  # this process's place in a torchrun group (rank 0 of 1 when not distributed)

    @property
    def settings(self) -> RunSettings:
        return self.resolved.settings

    @property
    def config(self) -> Any:
        return self.resolved.method_config

    @property
    def total_steps(self) -> int:
        return self.settings.epochs * self.steps_per_epoch

    @property
    def progress(self) -> float:
        """Fraction of training done, 0 to 1: what schedules such as DANN's are written in."""
        return min(self.step / max(self.total_steps, 1), 1.0)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision on CUDA when --set precision=bf16|fp16; a no-op otherwise."""
        precision = self.settings.precision
        if self.device.type != "cuda" or precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def optimize(self, loss: torch.Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """zero_grad, backward and step, through the fp16 gradient scaler when there is one."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._sync_gradients(optimizers)
            for opt in optimizers:
                opt.step()
            return
        self.scaler.scale(loss).backward()
        self._sync_gradients(optimizers)
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    def _sync_gradients(self, optimizers: tuple[torch.optim.Optimizer, ...]) -> None:
        if self.dist.enabled:  # every replica then takes the same step from the same weights
            params = (p for opt in optimizers for group in opt.param_groups for p in group["params"])
            distributed.average_gradients(params, self.dist)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a network to the device (to channels-last and compiled when asked)."""
        module = module.to(self.device)
        if self.settings.channels_last and self.device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        if self.settings.compile:
            module.compile()  # in place: the module keeps its type, attributes and state_dict keys
        return module

    def eval_batches(self, split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(split, self.settings.eval_batch_size)


class NonFiniteLoss(RunFailed):
    pass


class _StopFlag:
    """First Ctrl-C (or SIGTERM) asks the loop to stop at the next step; a second one aborts."""

    def __init__(self, console: Console) -> None:
        self.requested = False
        self.console = console
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print("[yellow]stopping after this step and saving a checkpoint (Ctrl-C again to abort)")


def steps_per_epoch(method: Method, ctx: RunContext) -> int:
    """An epoch is one pass over the largest training split the method draws from (by all processes)."""
    per_step = ctx.settings.batch_size * ctx.dist.world
    return max(len(ctx.domains[r].train) // per_step for r in method.train_domains())


def checkpoint_path(settings: RunSettings, run_id: str) -> Path:
    return Path(settings.checkpoint_dir).expanduser().resolve() / run_id / "last.pt"


def train(
    method: Method,
    ctx: RunContext,
    *,
    log_metrics: Any,
    on_epoch_end: Any,
    console: Console,
    resume_state: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Run the remaining epochs of `method`; returns the per-epoch metrics history."""
    s = ctx.settings
    wanted = method.train_domains()
    streams = {
        role: BatchStream(
            ctx.domains[role].train,
            s.batch_size,
            seed=s.seed * 1000 + i + 1,
            labels=labels,
            channels_last=s.channels_last and ctx.device.type == "cuda",
            rank=ctx.dist.rank,
            world=ctx.dist.world,
        )
        for i, (role, labels) in enumerate(wanted.items())
    }
    ctx.steps_per_epoch = steps_per_epoch(method, ctx)
    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    start_in_epoch = 0
    if resume_state is not None:
        method.load_state_dict(resume_state["method"])
        for role, st in resume_state["streams"].items():
            streams[role].load_state_dict(st)
        checkpoint.set_rng_state(resume_state["rng"])
        ctx.epoch, ctx.step = resume_state["epoch"], resume_state["step"]
        start_in_epoch, sums, history = resume_state["step_in_epoch"], resume_state["sums"], resume_state["history"]
        if ctx.scaler is not None and resume_state.get("scaler"):
            ctx.scaler.load_state_dict(resume_state["scaler"])
    ckpt = checkpoint_path(s, ctx.run_id)

    def save(step_in_epoch: int) -> None:
        if not ctx.dist.is_main:  # every replica holds the same state; rank 0 writes it
            return
        checkpoint.save(
            ckpt,
            {
                "method": method.state_dict(),
                "streams": {r: st.state_dict() for r, st in streams.items()},
                "rng": checkpoint.rng_state(),
                "epoch": ctx.epoch,
                "step": ctx.step,
                "step_in_epoch": step_in_epoch,
                "sums": dict(sums),
                "history": history,
                "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
                "resolved": ctx.resolved.to_dict(),
            },
        )

    window: dict[str, float] = {}
    if ctx.dist.enabled:
        distributed.broadcast_modules(_modules(method), ctx.dist)  # identical replicas from the first step
    with _StopFlag(console) as stop, Reporter(console, s.epochs, ctx.steps_per_epoch, ctx.step) as report:
        while ctx.epoch < s.epochs:
            for i in range(start_in_epoch, ctx.steps_per_epoch):
                batch = Batch({role: Labeled(*st.next()) for role, st in streams.items()})
                out = method.train_step(ctx, batch)
                ctx.step += 1
                stopping = stop.requested
                if ctx.dist.enabled:  # one small all-reduce: logged values averaged, and all stop together
                    out, stopping = distributed.reduce_step(out, stopping, ctx.dist)
                for key, value in out.items():
                    value = float(value)
                    if not math.isfinite(value):
                        raise NonFiniteLoss(
                            f"'{key}' became {value} at epoch {ctx.epoch + 1}, step {i + 1}; the run is stopped "
                            f"and the last good checkpoint kept ({ckpt}). Lower the learning rate "
                            "(--set lr=...) or try another seed"
                        )
                    sums[key] = sums.get(key, 0.0) + value
                    window[key] = window.get(key, 0.0) + value
                if ctx.step % s.log_every == 0:
                    log_metrics({f"step/{k}": v / s.log_every for k, v in window.items()}, ctx.step)
                    window.clear()
                if report.wants(ctx.step):
                    report.step(ctx.step, {k: v / (i + 1) for k, v in sums.items()})
                if stopping:
                    save(i + 1)
                    raise RunInterrupted(f"interrupted at epoch {ctx.epoch + 1}, step {i + 1}; checkpoint {ckpt}")
            start_in_epoch = 0
            metrics = {f"train/{k}": v / ctx.steps_per_epoch for k, v in sums.items()}
            sums = {}
            if ctx.dist.enabled:
                distributed.broadcast_modules(_modules(method), ctx.dist)  # rank 0's BN statistics
            if ctx.dist.is_main:
                with torch.no_grad():
                    metrics.update(method.evaluate(ctx))
            metrics = distributed.broadcast_object(metrics, ctx.dist)
            ctx.epoch += 1
            history.append(metrics)
            log_metrics(metrics, ctx.epoch)
            save(0)
            report.epoch_end(ctx.epoch, metrics)
            on_epoch_end(ctx.epoch, metrics)
            stopping = stop.requested
            if ctx.dist.enabled:
                _, stopping = distributed.reduce_step({}, stopping, ctx.dist)
            if stopping:
                raise RunInterrupted(f"interrupted after epoch {ctx.epoch}; checkpoint {ckpt}")
    return history


def _modules(method: Method) -> list[torch.nn.Module]:
    return [v for v in vars(method).values() if isinstance(v, torch.nn.Module)]
