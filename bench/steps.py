"""Training-step speed of every built-in network, fp32 against the `auto` choice and the others,
measured side by side in this one process.

For each network (DANN's MNIST-sized and SVHN-sized classifiers with their domain heads, the
DCGAN at 28, 32 and 64 px) the real method (`dann`, `gan`) is set up on its real data, and its
`train_step` is timed under each compute setting: fp32, channels-last, bf16 autocast, bf16 +
channels-last, and whatever `precision=auto channels_last=auto` picks on this machine. Settings
take turns in rounds (fp32, cl, bf16, ..., then again) so a drift in machine load does not favour
one; the median of each is reported, with its ratio to fp32. On CUDA each figure without
graphs also has the GPU's busy share: the time its kernels ran (torch.profiler, over a separate
window of the same steps) over the step's unprofiled wall time. The profiler runs only once every
figure of the process is timed, as CUPTI stays loaded after a profile and would slow the launches
timed after it (pytorch#144455); each window starts after two profiled steps left out, as a
session can drop its first kernel records.

    python bench/steps.py                 # every network, about 3 minutes on 2 idle CPU cores
    python bench/steps.py --nets dann-svhn --rounds 7
    python bench/steps.py --device cuda   # on a GPU
    python bench/steps.py --device cuda --nets dann-mnist --batches 64,256,1024 --settings fp32,auto --graphs
                                          # each setting also with its networks captured as CUDA graphs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from runner.batches import BatchStream
from runner.context import Batch, Labeled, RunContext
from runner.devices import Compute, choose_compute, cpu_bf16, describe, pick_device
from runner.runs.plan import RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.prepare import load_domains, make_context
from runner.seeding import seed_everything

# name -> (method, pair or dataset, settings): each the network a default run of that method trains
NETS: dict[str, tuple[str, dict[str, Any], list[tuple[str, Any]]]] = {
    "dann-mnist": ("dann", {"pair": "mnist:mnistm"}, []),
    "dann-svhn": ("dann", {"pair": "syndigits:mnistm"}, [("train_subset", 2000)]),
    "adamatch-mnist": ("adamatch", {"pair": "mnist:mnistm"}, []),
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


def make(
    method: str,
    where: dict[str, Any],
    settings: list[tuple[str, Any]],
    device: torch.device,
    compute: Compute,
    batch_size: int | None = None,
):
    """The method set up on its data with `compute` (its networks captured as CUDA graphs when
    `compute.graphs`, as `RunContext.prepare` does it), and a batch stream per training domain."""
    manager = get_manager()
    extra = [("batch_size", batch_size)] if batch_size else []
    planned = make_plan(RunRequest(method, overrides=[*settings, *extra, ("tsne_points", 0)], **where), manager)
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


def _batches(streams: dict[str, BatchStream], n: int) -> list[Batch]:
    return [Batch({r: Labeled(*s.next()) for r, s in streams.items()}) for _ in range(n)]


def _step(m: Any, ctx: RunContext, batch: Batch) -> None:
    if ctx.compute.graphs:  # as the engine does: the step before's graph outputs may be overwritten now
        torch.compiler.cudagraph_mark_step_begin()
    m.train_step(ctx, batch)
    ctx.step += 1


def time_steps(m: Any, ctx: RunContext, streams: dict[str, BatchStream], n: int, device: torch.device) -> float:
    """Seconds per training step over `n` steps (their batches drawn beforehand)."""
    batches = _batches(streams, n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:
        _step(m, ctx, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def kernel_seconds(m: Any, ctx: RunContext, streams: dict[str, BatchStream], n: int, warm: int = 2) -> float:
    """Seconds per step the GPU spent running kernels (and copies) over `n` profiled steps, after
    `warm` steps profiled and left out (a session's first kernel records can be lost). Off CUDA
    it profiles the CPU only and finds no kernels: 0."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = ctx.device.type == "cuda"
    batches = _batches(streams, warm + n)
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities, schedule=schedule(wait=0, warmup=warm, active=n, repeat=1)) as prof:
        for i, batch in enumerate(batches):
            _step(m, ctx, batch)
            if cuda and i == len(batches) - 1:  # every kernel ends inside the recorded window
                torch.cuda.synchronize()
            prof.step()
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if getattr(e, "device_type", None) == DeviceType.CUDA
    )
    busy_us, reach = 0.0, float("-inf")  # the union of the kernels' intervals: overlapping streams count once
    for start, end in spans:
        if end > reach:
            busy_us += end - max(start, reach)
            reach = end
    return busy_us / 1e6 / n


def graph_counts() -> tuple[int, int]:
    """(graphs torch.compile has made, CUDA graph captures Inductor has skipped) in this process
    so far; (0, 0) when torch.compile never ran."""
    if "torch._dynamo" not in sys.modules:
        return 0, 0
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(counters["inductor"]["cudagraph_skips"])


Built = tuple[Any, RunContext, dict[str, BatchStream]]


def measure(
    net: str,
    computes: dict[str, Compute],
    device: torch.device,
    *,
    batch_size: int | None = None,
    rounds: int = 5,
    steps: int = 6,
    warmup: int = 2,
) -> tuple[dict[str, dict[str, Any]], dict[str, Built]]:
    """Each compute setting's median step time of `net` (ms), settings taking turns in rounds,
    and the methods as set up (for `busy_shares`). For a setting with graphs, whether its
    networks were captured: torch.compile made a graph during its warm-up and Inductor skipped
    no CUDA graph capture (`skips`: how many it skipped; the log says why)."""
    method, where, extra = NETS[net]
    built: dict[str, Built] = {}
    captured: dict[str, bool | None] = {}
    skips: dict[str, int | None] = {}
    for name, c in computes.items():
        made0, skips0 = graph_counts()
        built[name] = make(method, where, extra, device, c, batch_size)
        if max(warmup, 5 if c.graphs else 0):  # first steps allocate (and compile, record graphs)
            time_steps(*built[name], max(warmup, 5 if c.graphs else 0), device)
        made, skipped = graph_counts()
        made, skipped = made - made0, skipped - skips0
        captured[name] = made > 0 and skipped == 0 if c.graphs else None
        skips[name] = skipped if c.graphs else None
    times: dict[str, list[float]] = {name: [] for name in computes}
    for _ in range(rounds):
        for name in computes:
            times[name].append(time_steps(*built[name], steps, device))
    out = {
        name: {
            "ms": 1000 * statistics.median(times[name]),
            "busy": None,
            "captured": captured[name],
            "skips": skips[name],
        }
        for name in computes
    }
    return out, built


def busy_share(built: Built, ms: float, steps: int) -> float | None:
    """The GPU's busy share of a step that took `ms` unprofiled: its kernel time over `steps`
    profiled steps over the step's time; None when the profiler saw no kernel or failed."""
    try:
        return min(1.0, kernel_seconds(*built, steps) / (ms / 1000)) or None
    except Exception as exc:  # a profiler that cannot read this GPU: no figure, not a failed check
        print(f"  (GPU busy share unavailable: {type(exc).__name__}: {exc})", flush=True)
        return None


def release(device: torch.device, graphs: bool) -> None:
    """After a network's figures: with graphs, the next network compiles afresh, as in a run of its own."""
    if graphs:
        import torch._dynamo

        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def with_graphs(settings: dict[str, Compute]) -> dict[str, Compute]:
    """Each setting, then each again with its networks captured as CUDA graphs."""
    captured = {f"{k}+graphs": dataclasses.replace(c, graphs=True) for k, c in settings.items()}
    return {**settings, **captured}


def write_json(path: Path, rows: list[dict[str, Any]]) -> None:
    """Whole or not at all: a process stopped mid-write leaves the file as it was."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)


def _can_keep(device: torch.device) -> bool:
    """Room on the GPU for another network kept set up until the busy-share pass."""
    if device.type != "cuda":
        return True
    free, total = torch.cuda.mem_get_info(device)
    return free > total / 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ", ".join(NETS))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per setting (median reported)")
    parser.add_argument("--steps", type=int, default=6, help="steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (5 at least with graphs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="", help="comma-separated batch sizes (default: each net's own)")
    parser.add_argument(
        "--settings", default="", help="comma-separated, of " + ", ".join([*SETTINGS, "auto"]) + " (default: all)"
    )
    parser.add_argument("--graphs", action="store_true", help="each setting also with CUDA graphs (CUDA only)")
    parser.add_argument("--only-graphs", action="store_true", help="only the settings with CUDA graphs")
    parser.add_argument(
        "--busy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the GPU's busy share, profiled after every timing (default: on CUDA without graphs; "
        "off CUDA it only runs the profiler)",
    )
    parser.add_argument("--busy-steps", type=int, default=10, help="profiled steps per busy share")
    parser.add_argument("--json", type=Path, help="write the figures here, after each network and batch size")
    parser.add_argument(
        "--budget", type=float, default=0, help="past this many seconds, measure only the first batch size's networks"
    )
    args = parser.parse_args()
    t_start = time.perf_counter()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the engine does: subnormal floats slow x86 arithmetic ~100x
    auto = choose_compute(device, "auto", "auto")
    settings = {**SETTINGS, "auto": auto}
    if args.settings:
        settings = {k: settings[k] for k in args.settings.split(",")}
    if args.graphs or args.only_graphs:
        settings = with_graphs(settings)
        if args.only_graphs:
            settings = {k: c for k, c in settings.items() if c.graphs}
    graphs = any(c.graphs for c in settings.values())
    # With graphs each network's compile is dropped after its figures (torch._dynamo.reset), so
    # its methods cannot wait for the busy-share pass: no busy share for them.
    busy = (device.type == "cuda" if args.busy is None else args.busy) and not graphs
    base_name = next(iter(settings))
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [None]
    print(f"device {describe(device)}; CPU bf16: {cpu_bf16() or 'none'}; torch {torch.__version__}")
    print(f"auto chooses: {auto.describe()}")
    print(f"median seconds per training step over {args.rounds} rounds of {args.steps} steps, settings taking turns\n")
    print(f"{'network':<12} {'batch':>5} {'setting':<26} {'ms/step':>9} {f'vs {base_name}':>9}")
    found: list[dict[str, Any]] = []
    kept: list[tuple[str, Any, dict[str, Built]]] = []  # for the busy-share pass
    for batch in batches:  # batch-major: past the budget, every network still has its first batch size
        for net in args.nets.split(","):
            if args.budget and batch != batches[0] and time.perf_counter() - t_start > args.budget:
                print(f"{net:<12} {batch or '':>5} skipped: past the {args.budget:.0f} s budget", flush=True)
                found.append({"net": net, "batch": batch, "skipped": "budget"})
            else:
                figures, built = measure(
                    net, settings, device, batch_size=batch, rounds=args.rounds, steps=args.steps, warmup=args.warmup
                )
                base = figures[base_name]["ms"]
                for name, f in figures.items():
                    note = "" if f["captured"] is not False else f"  (not captured: {_why(f)})"
                    line = f"{net:<12} {batch or '':>5} {name:<26} {f['ms']:>9.2f} {base / f['ms']:>8.2f}x"
                    print(line + note, flush=True)
                    found.append({"net": net, "batch": batch, "setting": name, **f})
                if busy and _can_keep(device):
                    kept.append((net, batch, built))
                elif busy:
                    print(f"{net:<12} {batch or '':>5} (no busy share: the GPU has no room to keep it set up)")
                del built
                release(device, graphs)
            if args.json:  # after each: a process stopped at its limit leaves what it measured
                write_json(args.json, found)
        if len(batches) == 1:
            print()
    if kept:
        print("the GPU's busy share (kernel time over the step's unprofiled time), profiled now", flush=True)
    for net, batch, built in kept:
        for name, one in built.items():
            row = next(r for r in found if (r["net"], r["batch"], r.get("setting")) == (net, batch, name))
            row["busy"] = busy_share(one, row["ms"], args.busy_steps)
            busy_text = "-" if row["busy"] is None else f"{100 * row['busy']:.0f}%"
            print(f"{net:<12} {batch or '':>5} {name:<26} {busy_text:>9}", flush=True)
        if args.json:
            write_json(args.json, found)
    del kept


def _why(f: dict[str, Any]) -> str:
    if f.get("skips"):
        return f"Inductor skipped {f['skips']} CUDA graph capture(s); the log above says why"
    return "torch.compile made no graph"


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # stopped at a caller's time limit (bench/gpu.sh): the rows so far stand
        print("stopped (Ctrl-C); the rows above are the measured ones", flush=True)
        sys.exit(130)
