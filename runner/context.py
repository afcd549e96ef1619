"""What a method's hooks receive: the run's context (`RunContext`), its data (`Domain`) and one
training step's batch (`Batch`). Part of the plugin contract; the loop lives in `engine.py`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import torch

from runner.batches import batches
from runner.datasets import Split
from runner.devices import Compute
from runner.distributed import SINGLE, Dist, replica
from runner.seeding import generator

if TYPE_CHECKING:
    from runner.config import ResolvedConfig, Task
    from runner.settings import RunSettings
    from runner.validator import Validator

M = TypeVar("M", bound=torch.nn.Module)


class Labeled(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor | None  # None for a domain whose labels the method may not use


class Batch(dict[str, Labeled]):
    """One training step's data: role ("source", "target" or "data") -> (x, y)."""


@dataclass
class Domain:
    """One dataset in a run, already on the device and in the run's common shape: `train` (what
    training draws from), `val` (held out of the training split, for choosing; never trained on)
    and `test` (only reported)."""

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    val: Split | None = None


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
    history: list[dict[str, float]] = field(default_factory=list)  # each finished epoch's metrics
    dist: Dist = SINGLE  # this process's place in a torchrun group (rank 0 of 1 when not distributed)
    compute: Compute = field(default_factory=lambda: Compute("fp32", False))  # autocast dtype, memory format
    # The validators an adaptation method scores each epoch with, by name (`runner.validator`):
    # every registered one for `hw3 run`; None (a context made by hand) means the built-in ones.
    validators: dict[str, Validator] | None = None

    @property
    def settings(self) -> RunSettings:
        return self.resolved.settings

    @property
    def config(self) -> Any:
        return self.resolved.method_config

    @property
    def task(self) -> Task:
        return self.resolved.task

    @property
    def total_steps(self) -> int:
        return self.settings.epochs * self.steps_per_epoch

    @property
    def progress(self) -> float:
        """Fraction of training done, 0 to 1: what schedules such as DANN's are written in."""
        return min(self.step / max(self.total_steps, 1), 1.0)

    def generator(self, name: str, *, per_process: bool = False, device: Any = "cpu") -> torch.Generator:
        """A random generator of its own for stream `name`, derived from the run seed (the same
        every time the run is repeated); `per_process` gives each data-parallel process its own."""
        if per_process:
            name = f"{name}/rank{self.dist.rank}"
        return generator(self.settings.seed, name, device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision as the run chose it (`precision`, on the CPU or a GPU); a no-op for fp32.
        Weights stay fp32; compute losses on `.float()` outputs."""
        precision = self.compute.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def optimize(self, loss: torch.Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """zero_grad, backward and step, through the fp16 gradient scaler when there is one (and
        under `--nproc`, DDP averaging the gradients over the processes during backward)."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if self.dist.enabled:  # DDP averages the gradients: every process takes the same step
            loss = replica(optimizers, self.device)(loss)
        if self.scaler is None:
            loss.backward()
            for opt in optimizers:
                opt.step()
            return
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    @property
    def channels_last(self) -> bool:
        return self.compute.channels_last

    def prepare(self, module: M) -> M:
        """Move a network to the device (to channels-last, compiled or captured as CUDA graphs when
        asked). Compiling is in place: the module keeps its type, attributes and state_dict keys."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.compute.graphs:
            # Steps call a network whole or by its parts (DANN: `features`, then `head`), and a
            # compiled module is only compiled where it is called, so each entry point is captured.
            # A deep copy runs uncompiled: a method prepares the copies its steps run (a teacher).
            parts: list[torch.nn.Module] = [module, *module.children()]
            for part in parts:
                part.compile(mode="reduce-overhead")
        elif self.settings.compile:
            module.compile()
        return module

    def eval_batches(self, split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in batches(split, self.settings.eval_batch_size):
            yield (x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x), y
