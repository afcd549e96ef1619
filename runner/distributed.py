"""Data-parallel training through torch.distributed, with no change to any method.

Every process runs the same method on its own shard of each domain's batches, and PyTorch's
DistributedDataParallel averages the gradients: in `RunContext.optimize` the loss passes through
a `replica` of the optimizers' parameters (a module whose forward returns the loss unchanged,
wrapped in DDP), so DDP's hooks all-reduce the gradients in buckets while backward still runs,
and every process takes the same optimizer step. The replica, rather than the method's networks
in DDP, because methods call their networks' parts directly (`net.features(x)`, a GAN's D twice
a step) and keep their module types and state_dict keys; DDP only needs to see the loss.

The engine calls in here at three other points: at setup (every process starts from rank 0's
weights), at each read-back of the logged values (every `log_every` steps and at epoch end:
averaged over the processes, with any stop request shared, so all processes stop together at
the same step) and at epoch end (BN statistics, kept per process during the epoch, taken from
rank 0, which alone evaluates, logs and checkpoints). `hw3 run --nproc N` starts the processes
with torchrun; a user's own `torchrun -m runner run ...` works the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from runner.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank `rank` of `world` processes (1: not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()

_replicas: dict[tuple[torch.optim.Optimizer, ...], torch.nn.Module] = {}  # by optimizers, until shutdown


def under_launcher() -> bool:
    """True inside a process started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def check_gpus(processes: int, device: str, gpus: int) -> None:
    """One process per GPU: on a CUDA device, more processes than GPUs stop here, in one line,
    before any work (rather than an invalid device ordinal in one rank while the others hang)."""
    cuda = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if cuda and processes > gpus:
        raise ConfigError(
            f"--nproc {processes}: one process per GPU, and this machine has {gpus} visible GPU(s); use "
            f"--nproc {max(gpus, 1)}, or several runs on one GPU with hw3 sweep --workers N"
        )


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (gloo on the CPU, NCCL on CUDA)."""
    if not under_launcher():
        return SINGLE, device
    import torch.distributed as dist

    if device.type == "cuda":  # every rank checks alike, so all stop, before any waits for the others
        check_gpus(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), "cuda", torch.cuda.device_count())
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size()), device


def shutdown(d: Dist) -> None:
    # Each DDP replica holds the process group: freed first, the group's threads end when it is
    # destroyed (left to the interpreter's exit, a gloo thread aborted a process now and then).
    _replicas.clear()
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            # The other ranks wait here while rank 0 writes the final outputs: a rank that tears
            # its connections down early can abort the group (seen once under gloo).
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


class _PassThrough(torch.nn.Module):
    """Holds parameters (the very Parameter objects) and returns its input: DDP wraps this."""

    def __init__(self, params: list[torch.nn.Parameter], device: torch.device) -> None:
        super().__init__()
        self.params = torch.nn.ParameterList(params)
        # One element no loss reaches: DDP then always finds an unused parameter and keeps quiet
        # its warning that find_unused_parameters found none (a false alarm for a step that does).
        self.unreached = torch.nn.Parameter(torch.zeros(1, device=device))

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss


def replica(optimizers: tuple[torch.optim.Optimizer, ...], device: torch.device) -> torch.nn.Module:
    """A DDP module over these optimizers' parameters whose forward returns the loss it is given:
    backward from its output averages their gradients over the processes (in buckets, during
    backward). Built on first use, one for each set of optimizers, kept (with the optimizers, so
    an id is never reused) until `shutdown`.

    DDP finds the parameters the loss reaches (`find_unused_parameters`): a step that leaves one
    without a gradient (on one process or all) neither hangs nor fails the next step, and one no
    process reached keeps no gradient, as without DDP. A parameter the loss reaches through a
    network whose own replica was not called this step (G's loss through D) gets its gradient
    with no all-reduce; `optimize` clears it before that network's next step. No sync at
    construction (the engine has given every process rank 0's weights already, and the loss's
    graph, built before, must not see its parameters change), and no buffers to broadcast."""
    found = _replicas.get(optimizers)
    if found is None:
        params = (p for opt in optimizers for group in opt.param_groups for p in group["params"])
        found = _replicas[optimizers] = _wrap(params, device)
    return found


def _wrap(params: Iterable[torch.nn.Parameter], device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    unique = list({id(p): p for p in params if p.requires_grad}.values())
    module = _PassThrough(unique, device)
    kwargs: dict[str, Any] = {"device_ids": [device] if device.type == "cuda" else None, "find_unused_parameters": True}
    return DistributedDataParallel(module, init_sync=False, **kwargs)


def average_values(
    values: list[torch.Tensor], numbers: list[float], stop: bool, d: Dist, device: torch.device
) -> tuple[list[float], bool]:
    """The mean over the processes of each of `values` (scalar tensors on `device`, this process's)
    then each of `numbers`, and whether any process asked to stop: one all-reduce, one read-back."""
    import torch.distributed as dist

    parts = [torch.stack(values).double()] if values else []
    parts.append(torch.tensor([*numbers, 1.0 if stop else 0.0], dtype=torch.float64, device=device))
    t = torch.cat(parts)
    dist.all_reduce(t)
    t /= d.world
    host = t.tolist()
    return host[:-1], host[-1] > 0


def any_process(flag: bool, d: Dist, device: torch.device) -> bool:
    """Whether `flag` is true on any process (a stop request, shared so all stop together)."""
    return average_values([], [], flag, d, device)[1]


def broadcast_modules(modules: Iterable[torch.nn.Module], d: Dist) -> None:
    """Rank 0's parameters and buffers (BN statistics) to every process."""
    import torch.distributed as dist

    with torch.no_grad():
        for m in modules:
            for t in [*m.parameters(), *m.buffers()]:
                dist.broadcast(t.data, 0)


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every process (pickled; for small things such as a run ID or metrics)."""
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `hw3 <argv>` in `nproc` processes through torchrun; returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = dict(os.environ)
    # The cores shared out among the processes (torchrun would set 1 and print a warning).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        return subprocess.call([*cmd, "-m", "runner", *argv], env=env)
    except KeyboardInterrupt:
        return 130


def without_option(argv: Sequence[str], name: str) -> list[str]:
    """`argv` minus `--name V` / `--name=V`: the command line each process gets."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out
