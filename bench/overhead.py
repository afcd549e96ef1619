"""Host overhead of a training step, per built-in method, on the CPU: aten operations dispatched
and reads of a tensor's value back to Python (`aten::_local_scalar_dense`: `.item()`, `.tolist()`,
`float(t)`, the optimizers' per-parameter step counters) per optimisation step.

Counted with a `TorchDispatchMode` around the engine's training loop (`_Loop.train_epoch`: the
batches, the method's steps and the engine's own work between them, its reads of the logged
values included) over two whole `engine.fit` runs of different lengths, the difference divided by
the extra steps, as the GPU issue (#25) counted its "before" figures over whole runs. Counting
inside the loop keeps out evaluation, which for DANN (its AdaBN pass over the training images)
grows with the data rather than the steps. Each op a step dispatches costs a kernel launch on a
GPU, and each read makes the host wait for the device.

    python bench/overhead.py                 # every built-in method
    python bench/overhead.py --methods dann --steps 8,24
"""

from __future__ import annotations

import argparse
import collections
import io
import tempfile
from typing import Any

import torch
from rich.console import Console
from torch.utils._python_dispatch import TorchDispatchMode

from runner.engine import _Loop, fit
from runner.runs.plan import RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.prepare import load_domains, make_context
from runner.sinks import NullSink

METHODS = ("baseline", "dann", "adda", "selfens", "adamatch", "gan", "acgan")
# Measured on main e05d66e by the GPU issue (#25) with the same protocol: (aten ops, host reads) per step.
BEFORE = {
    "baseline": (344, 18),
    "dann": (562, 25.6),
    "adda": (459, 20),
    "selfens": (660, 18),
    "gan": (901, 48.7),
    "acgan": (None, None),
}


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


def counted_run(method: str, steps: int, batch_size: int) -> tuple[int, int, int]:
    """(aten ops, host reads, optimisation steps) of one whole run of `steps` steps in one epoch."""
    manager = get_manager()
    overrides = [
        ("epochs", 1),
        ("batch_size", batch_size),
        ("train_subset", steps * batch_size),
        ("test_subset", 200),
        ("tsne_points", 0),
        ("checkpoint_dir", tempfile.mkdtemp()),
    ]
    planned = make_plan(RunRequest(method, overrides=overrides), manager)
    resolved = planned.resolved
    domains = load_domains(resolved, manager, None, torch.device("cpu"), planned.registry)
    ctx = make_context(resolved, domains, run_id="bench-overhead")
    counter = Count()
    train_epoch = _Loop.train_epoch

    def counted(loop: _Loop, *args: Any) -> None:
        with counter:
            train_epoch(loop, *args)

    _Loop.train_epoch = counted  # type: ignore[method-assign]
    try:
        result = fit(planned.method(), ctx, NullSink(), console=Console(file=io.StringIO()))
    finally:
        _Loop.train_epoch = train_epoch  # type: ignore[method-assign]
    reads = counter.ops[torch.ops.aten._local_scalar_dense.default]
    return sum(counter.ops.values()), reads, result.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", default="6,18", help="the two run lengths, in steps")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    short, long = (int(s) for s in args.steps.split(","))
    torch.set_flush_denormal(True)
    print(f"per optimisation step, from whole runs of {short} and {long} steps (batch {args.batch_size}), CPU")
    print(f"{'method':<10} {'aten ops':>9} {'before':>7} {'ratio':>6} {'host reads':>11} {'before':>7}")
    for method in args.methods.split(","):
        ops_a, reads_a, steps_a = counted_run(method, short, args.batch_size)
        ops_b, reads_b, steps_b = counted_run(method, long, args.batch_size)
        extra = steps_b - steps_a
        ops, reads = (ops_b - ops_a) / extra, (reads_b - reads_a) / extra
        ops_before, reads_before = BEFORE.get(method, (None, None))
        ratio = f"{ops / ops_before:.2f}" if ops_before else "-"
        print(
            f"{method:<10} {ops:>9.1f} {ops_before or '-':>7} {ratio:>6} {reads:>11.1f} {reads_before or '-':>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
