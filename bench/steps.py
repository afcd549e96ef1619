"""Training-step speed of every built-in network, fp32 against the `auto` choice and the others,
measured side by side in this one process.

For each network (DANN's MNIST-sized and SVHN-sized classifiers with their domain heads, the
DCGAN at 28, 32 and 64 px) the real method (`dann`, `gan`) is set up on its real data, and its
`train_step` is timed under each compute setting: fp32, channels-last, bf16 autocast, bf16 +
channels-last, and whatever `precision=auto channels_last=auto` picks on this machine. Settings
take turns in rounds (fp32, cl, bf16, ..., then again) so a drift in machine load does not favour
one; the median of each is reported, with its ratio to fp32.

    python bench/steps.py                 # every network, about 3 minutes on 2 idle CPU cores
    python bench/steps.py --nets dann-svhn --rounds 7
    python bench/steps.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from runner.batches import BatchStream
from runner.context import Batch, Labeled, RunContext
from runner.devices import Compute, choose_compute, cpu_bf16, describe, pick_device
from runner.plan import RunRequest, make_plan
from runner.plugins import get_manager
from runner.prepare import load_domains, make_context
from runner.seeding import seed_everything

# name -> (method, pair or dataset, settings): each the network a default run of that method trains
NETS: dict[str, tuple[str, dict[str, Any], list[tuple[str, Any]]]] = {
    "dann-mnist": ("dann", {"pair": "mnist:mnistm"}, []),
    "dann-svhn": ("dann", {"pair": "syndigits:mnistm"}, [("train_subset", 2000)]),
    "dcgan-28": ("gan", {"dataset": "mnist"}, []),
    "dcgan-32": ("gan", {"dataset": "mnist"}, [("image_size", 32)]),
    "dcgan-64": ("gan", {"dataset": "mnist"}, [("image_size", 64)]),
}
SETTINGS = {
    "fp32": Compute("fp32", False),
    "channels-last": Compute("fp32", True),
    "bf16": Compute("bf16", False),
    "bf16+channels-last": Compute("bf16", True),
}


class StepOnly:
    """A method set up for timing: its quality evaluator (GANs) is skipped, it is not what a step costs."""


def make(method: str, where: dict[str, Any], settings: list[tuple[str, Any]], device: torch.device, compute: Compute):
    manager = get_manager()
    planned = make_plan(RunRequest(method, overrides=[*settings, ("tsne_points", 0)], **where), manager)
    resolved, cls = planned.resolved, planned.method_cls
    domains = load_domains(resolved, manager, None, device, planned.registry)
    timed = type(f"Timed{cls.__name__}", (StepOnly, cls), {"_quality_setup": lambda self, ctx: None})
    ctx = make_context(resolved, domains, device, compute=compute)
    m = timed(resolved.method_config)
    ctx.steps_per_epoch = max(len(domains[r].train) // resolved.settings.batch_size for r in m.train_domains())
    seed_everything(0)
    m.setup(ctx)
    streams = {
        role: BatchStream(domains[role].train, resolved.settings.batch_size, 0, labels, compute.channels_last)
        for role, labels in m.train_domains().items()
    }
    return m, ctx, streams


def time_steps(m: Any, ctx: RunContext, streams: dict[str, BatchStream], n: int, device: torch.device) -> float:
    batches = [Batch({r: Labeled(*s.next()) for r, s in streams.items()}) for _ in range(n)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:
        m.train_step(ctx, batch)
        ctx.step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ", ".join(NETS))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per setting (median reported)")
    parser.add_argument("--steps", type=int, default=6, help="steps per round")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the engine does: subnormal floats slow x86 arithmetic ~100x
    auto = choose_compute(device, "auto", "auto")
    settings = {**SETTINGS, "auto": auto}
    if device.type == "cpu":
        settings.pop("fp16", None)
    print(f"device {describe(device)}; CPU bf16: {cpu_bf16() or 'none'}; torch {torch.__version__}")
    print(f"auto chooses: {auto.describe()}")
    print(f"median seconds per training step over {args.rounds} rounds of {args.steps} steps, settings taking turns\n")
    print(f"{'network':<12} {'setting':<20} {'ms/step':>9} {'vs fp32':>8}")
    for net in args.nets.split(","):
        method, where, extra = NETS[net]
        built = {name: make(method, where, extra, device, c) for name, c in settings.items()}
        for name in settings:  # warm-up: first steps allocate and pick kernels
            time_steps(*built[name], 2, device)
        times: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.rounds):
            for name in settings:
                times[name].append(time_steps(*built[name], args.steps, device))
        base = statistics.median(times["fp32"])
        for name in settings:
            med = statistics.median(times[name])
            print(f"{net:<12} {name:<20} {1000 * med:>9.1f} {base / med:>7.2f}x")
        print()


if __name__ == "__main__":
    main()
