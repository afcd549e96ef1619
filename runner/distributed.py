"""Data-parallel training through torch.distributed, with no change to any method.

Every process runs the same method on its own shard of each domain's batches. The engine calls
in here at three points: after each backward (gradients averaged across processes, so every
replica takes the same optimizer step), after each step (the step's logged values averaged, and
a stop request shared, so all processes stop together), and at epoch end (BN statistics taken
from rank 0, which alone evaluates, logs and checkpoints). `hw3 run --nproc N` starts the
processes with torchrun; a user's own `torchrun -m runner run ...` works the same.
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
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            # The other ranks wait here while rank 0 writes the final outputs: a rank that tears
            # its connections down early can abort the group (seen once under gloo).
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


def average_gradients(params: Iterable[torch.nn.Parameter], d: Dist) -> None:
    """Mean of each gradient over the processes, in one flat all-reduce (one message, not hundreds)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def reduce_step(values: dict[str, float], stop: bool, d: Dist) -> tuple[dict[str, float], bool]:
    """The step's values averaged over processes, and whether any process was asked to stop."""
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys] + [1.0 if stop else 0.0], dtype=torch.float64)
    dist.all_reduce(t)
    out = {k: float(v) / d.world for k, v in zip(keys, t[:-1].tolist(), strict=True)}
    return out, bool(t[-1] > 0)


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
