"""Every built-in method's training step is fit for a GPU, checked on the CPU by watching every
aten operation it dispatches (in bf16 autocast): no operation CUDA's autocast refuses (binary
cross-entropy on probabilities, unsafe in half precision: self-ensembling's class-balance term
once used it and failed at its first GPU step), and no read of a value back to the host (`.item()`,
`.tolist()`, `F.one_hot`'s range check, an optimizer's step counter), which would make the host
wait for the device every step."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from runner.batches import BatchStream
from runner.context import Batch, Labeled
from runner.devices import Compute
from runner.runs.plan import RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.prepare import load_domains, make_context
from runner.seeding import seed_everything

# What torch's CUDA autocast raises on ("unsafe to autocast"): its banned list.
REFUSED_ON_CUDA = {torch.ops.aten.binary_cross_entropy.default, torch.ops.aten.binary_cross_entropy_backward.default}


class Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["baseline", "dann", "adda", "selfens", "adamatch", "gan", "acgan"])
def test_a_training_step_uses_no_operation_cuda_autocast_refuses_and_reads_nothing_back(method: str) -> None:
    manager = get_manager()
    tiny = [("train_subset", 64), ("batch_size", 16), ("epochs", 1)]
    planned = make_plan(RunRequest(method, overrides=tiny), manager)
    resolved, cls = planned.resolved, planned.method_cls
    domains = load_domains(resolved, manager, None, torch.device("cpu"), planned.registry)
    ctx = make_context(resolved, domains, compute=Compute("bf16", False))
    stepper = type(f"Step{cls.__name__}", (cls,), {"_quality_setup": lambda self, ctx: None})
    m = stepper(resolved.method_config)
    ctx.steps_per_epoch = 4
    seed_everything(0)
    m.setup(ctx)
    streams = {role: BatchStream(domains[role].train, 16, 0, labels) for role, labels in m.train_domains().items()}
    ops = Ops()
    with ops:
        for _ in range(3):  # ADDA adapts from the second half of its steps on: see both stages
            m.train_step(ctx, Batch({r: Labeled(*s.next()) for r, s in streams.items()}))
            ctx.step += 1
    assert len(ops.seen) > 20  # the step really ran under the watch
    assert not ops.seen & REFUSED_ON_CUDA
    assert torch.ops.aten._local_scalar_dense.default not in ops.seen
