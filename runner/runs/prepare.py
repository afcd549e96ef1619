"""Preparing a planned run: its data on the device, its method and its `RunContext`, checked,
and nothing written anywhere (no MLflow). `make_context` is the one place a `RunContext` is built:
`hw3 run`, the bench scripts and the tests all come through it."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import ConfigError, DataError, Hw3Error

if TYPE_CHECKING:
    import torch

    from runner.config import Registry, ResolvedConfig
    from runner.context import Domain, RunContext
    from runner.datasets import Split
    from runner.devices import Compute
    from runner.distributed import Dist
    from runner.method import Method
    from runner.runs.plan import Plan
    from runner.runs.plugins import PluginManager
    from runner.validator import Validator


@dataclass
class Prepared:
    """A planned run made ready: the method (built, not yet set up) and its context."""

    plan: Plan
    method: Method
    ctx: RunContext


def make_context(
    resolved: ResolvedConfig,
    domains: dict[str, Domain],
    device: torch.device | str = "cpu",
    *,
    dist: Dist | None = None,
    compute: Compute | None = None,
    run_id: str = "",
    validators: dict[str, Validator] | None = None,
) -> RunContext:
    """The context a method's hooks receive, with an fp16 gradient scaler when the run computes in fp16."""
    import torch

    from runner.context import RunContext
    from runner.devices import Compute
    from runner.distributed import SINGLE

    device = torch.device(device)
    compute = compute or Compute("fp32", False)
    scaler = torch.amp.GradScaler(device.type) if compute.precision == "fp16" else None
    return RunContext(
        resolved=resolved,
        device=device,
        domains=domains,
        run_id=run_id,
        scaler=scaler,
        dist=dist or SINGLE,
        compute=compute,
        validators=validators,
    )


def prepare(plan: Plan, manager: PluginManager, device: torch.device, dist: Dist, compute: Compute) -> Prepared:
    """Data (decoded once, cached, on the device), the method and its context; raises before any
    run exists when the data cannot fill a batch or the checkpoint folder cannot be written."""
    domains = load_domains(plan.resolved, manager, plan.request.data_root, device, plan.registry)
    method = plan.method()
    check_before_work(method, domains, plan.resolved, dist.world)
    validators = {name: reg.obj for name, reg in manager.validators().items()}
    ctx = make_context(plan.resolved, domains, device, dist=dist, compute=compute, validators=validators)
    return Prepared(plan, method, ctx)


def load_domains(
    resolved: ResolvedConfig,
    manager: PluginManager,
    data_root: str | None,
    device: torch.device,
    registry: Registry | None = None,
) -> dict[str, Domain]:
    """Each role's dataset, decoded (or read from the cache), subset, brought to the run's
    common size and channel count, on the device."""
    from runner.batches import conform
    from runner.cache import check_writable, data_context, load_dataset
    from runner.config import load_registry
    from runner.context import Domain

    s = resolved.settings
    specs = {role: manager.dataset(name) for role, name in resolved.task.roles.items()}
    channels = s.channels or max(spec.channels for spec in specs.values())
    size = s.image_size or next(iter(specs.values())).size
    dctx = replace(data_context(data_root), registered=manager.dataset)
    check_writable(dctx.cache_dir, "HW3_CACHE_DIR" if os.environ.get("HW3_CACHE_DIR") else "the dataset cache")
    registry = registry or load_registry()
    domains = {}
    for role, spec in specs.items():
        reg = manager.datasets()[spec.name]
        plugin = f"plugin '{reg.plugin}', {reg.package}"
        try:
            splits = load_dataset(spec, dctx.for_dataset(spec, registry.datasets.get(spec.name)))
        except DataError as exc:  # bad data: say which plugin's dataset it is
            raise DataError(f"{exc} [dataset from {plugin}]") from None
        except Hw3Error:
            raise
        except Exception as exc:  # a dataset plugin's own bug: name it rather than dump a traceback
            raise Hw3Error(f"dataset '{spec.name}' ({plugin}) failed to load: {type(exc).__name__}: {exc}") from exc
        for needed in ("train", "test"):
            if needed not in splits:
                raise Hw3Error(f"dataset '{spec.name}' has no '{needed}' split (it has {', '.join(splits)})")
        train, val = validation_split(splits, s.val_fraction)
        train = conform(train.subset(s.train_subset), channels, size).to(device)
        val = conform(val, channels, size).to(device)
        test = conform(splits["test"].subset(s.test_subset), channels, size).to(device)
        domains[role] = Domain(spec.name, train, test, spec.classes, val)
    return domains


def check_before_work(method: Method, domains: dict[str, Domain], resolved: ResolvedConfig, world: int) -> None:
    """What only the loaded data shows, checked before a run is opened: a batch no training split
    can fill, and a checkpoint folder that cannot be written."""
    from runner.cache import check_writable

    s = resolved.settings
    for role in method.train_domains():
        n = len(domains[role].train)
        if n < s.batch_size * world:
            held = f", after {s.val_fraction:.0%} held out for validation" if s.val_fraction else ""
            raise ConfigError(
                f"batch_size={s.batch_size}{f' x {world} processes' if world > 1 else ''} is more than the "
                f"{n} training images of {domains[role].name}{held}; lower it with --set batch_size=N"
            )
    check_writable(Path(s.checkpoint_dir), "checkpoint_dir")


def validation_split(splits: dict[str, Split], fraction: float) -> tuple[Split, Split]:
    """(train, val): a dataset's own validation split when it has one, else `fraction` of each
    class held out of its training split."""
    if "val" in splits:
        return splits["train"], splits["val"]
    return splits["train"].held_out(fraction)
