"""`--workers N|auto` of `hw3 sweep` and `hw3 reproduce`: how many runs go side by side, on which
device each one trains, and how many CPU threads each gets. Pure functions, apart from the two
that read the machine (`cores`, `visible_gpus`), so the rules are tested without a GPU.
"""

from __future__ import annotations

import os
import re

from runner.errors import ConfigError

AUTO = "auto"
RUNS_PER_GPU = 4  # four `hw3 run dann --device cuda` on one H200: 3.5x the throughput of one alone
CPU_THREADS_PER_RUN = 4  # on the CPU, `auto` gives each run this many threads ...
CPU_MIN_CORES = 8  # ... from this many cores up; below it one run uses them all

WORKERS_HELP = (
    "Runs at once, each in a process of its own with the CPU cores split between them (threads = cores / N); "
    "on several GPUs each process takes one, round robin. N or auto, which picks: on CUDA "
    f"{RUNS_PER_GPU} per GPU (every visible one for cuda or auto, the one for cuda:N), at most one per CPU core; "
    f"on the CPU 1, or cores / {CPU_THREADS_PER_RUN} from {CPU_MIN_CORES} cores up."
)
_CUDA = re.compile(r"cuda(?::(\d+))?")


def parse_workers(text: str | int) -> int | str:
    """`--workers` as a positive whole number or "auto"; anything else is a one-line error."""
    value = str(text).strip().lower()
    if value == AUTO:
        return AUTO
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"--workers {text!r}: write a whole number of runs at once, such as 4, or auto") from None
    if n < 1:
        raise ConfigError(f"--workers {n}: must be at least 1 (or auto)")
    return n


def cores() -> int:
    """The CPU cores this process may use: its affinity set (`taskset`, a container's cpuset), not
    the host's count. A CPU quota without a cpuset is not seen."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def visible_gpus() -> int:
    """CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def on_cuda(device: str, gpus: int) -> bool:
    """Whether runs with this device setting train on CUDA: `cuda`, `cuda:N`, or `auto` where
    there is a GPU (`auto` takes CUDA first)."""
    spec = device.strip().lower()
    return gpus > 0 and (spec == AUTO or _CUDA.fullmatch(spec) is not None)


def auto_workers(device: str, gpus: int, cores: int) -> int:
    """What `--workers auto` picks for runs with this device setting.

    On CUDA: `RUNS_PER_GPU` runs per visible GPU (per the one GPU for an explicit `cuda:N`), at
    most one per CPU core. The networks here are small enough that a run is bound by kernel
    launches, so one process leaves the GPU mostly idle: four `hw3 run dann --device cuda
    --epochs 10` at once took 49.8 s on an H200 against 43.7 s for one alone. Each process needs
    a core of its own to launch its kernels, hence the cap.

    On the CPU (and MPS): 1 below `CPU_MIN_CORES` cores, else one run per `CPU_THREADS_PER_RUN`
    cores. Runs side by side split the cores (threads = cores / workers), so on a small machine
    each would get one or two threads and they would compete for the same caches and memory
    bandwidth, with nothing gained over running one after another (2-core machines get 1). The
    small networks here stop gaining from more intra-op threads after a few, so on a big machine
    several runs of 4 threads each use it better than one run of all of them. This CPU rule is a
    judgement, not a measurement; give `--workers N` to choose.
    """
    cores = max(1, cores)
    if on_cuda(device, gpus):
        explicit = _CUDA.fullmatch(device.strip().lower())
        shared = 1 if explicit and explicit.group(1) is not None else gpus  # `cuda:N`: that one GPU
        return max(1, min(RUNS_PER_GPU * shared, cores))
    if cores < CPU_MIN_CORES:
        return 1
    return max(1, cores // CPU_THREADS_PER_RUN)


def resolve_workers(workers: int | str, device: str, jobs: int) -> int:
    """The number of processes for `jobs` runs: `auto` resolved for this machine, and never more
    processes than there are runs (at least 1)."""
    spec = parse_workers(workers)
    n = auto_workers(device, visible_gpus() if spec == AUTO else 0, cores()) if spec == AUTO else int(spec)
    return max(1, min(n, jobs))


def spreads(device: str, gpus: int) -> bool:
    """Whether runs with this device setting are spread over the GPUs: `cuda` or `auto` with
    several visible (an explicit `cuda:N` is the user's choice, which all of them share)."""
    return gpus > 1 and device.strip().lower() in ("cuda", AUTO)


def device_for(device: str, slot: int, gpus: int) -> str:
    """Round robin: the device a run in worker `slot` trains on, `cuda:{slot % gpus}` where its
    setting `spreads`, else its own setting unchanged."""
    return f"cuda:{slot % gpus}" if spreads(device, gpus) else device


def threads_per_run(workers: int, cores: int) -> int:
    """CPU threads for each of `workers` runs side by side: the cores split evenly, at least 1."""
    return max(1, cores // max(1, workers))
