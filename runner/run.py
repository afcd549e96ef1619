"""One `hw3 run`: plan -> data -> context -> open the run -> engine.

The data flows one way. Nothing here knows a particular method or dataset.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from runner.config import Registry, ResolvedConfig, SavedConfig, Task, load_registry, resolve
from runner.errors import ConfigError, DataError, Hw3Error, RunInterrupted
from runner.plugins import PluginManager, get_manager

if TYPE_CHECKING:
    import torch

    from runner.checkpoint import TrainState
    from runner.context import Domain, RunContext
    from runner.datasets import Split
    from runner.method import Method, ReportRow
    from runner.tracking import Tracker


@dataclass
class RunRequest:
    """What the CLI (or a test, or a sweep) asks for."""

    method: str
    pair: str | None = None
    dataset: str | None = None
    preset: str | None = None
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    experiment: str | None = None
    run_name: str | None = None
    data_root: str | None = None
    resume: str | None = None
    parent_run_id: str | None = None  # set for each child run under `--seeds` and `hw3 sweep`
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags for the run (suites, sweeps)


@dataclass
class RunResult:
    run_id: str
    experiment: str
    status: str
    metrics: dict[str, float]
    tracking_uri: str
    checkpoint: str
    resolved: ResolvedConfig
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase (engine.FitResult)
    steps: int = 0  # optimisation steps this call took
    history: list[dict[str, float]] = field(default_factory=list)  # each epoch's metrics


RESUMABLE = {"epochs", "device", "eval_batch_size", "log_every"}
CHECKPOINT_DIR_PARAM = "hw3.checkpoint_dir"  # absolute, logged once: params cannot be edited later


def plan_task(req: RunRequest, method_cls: type[Method], registry: Registry) -> Task:
    """The pair or dataset the request names (or the registry's default), checked for shape."""
    if method_cls.kind == "adapt":
        if req.dataset:
            raise ConfigError(
                f"method '{req.method}' adapts between two domains: use --pair SOURCE:TARGET, not --dataset"
            )
        pair = req.pair or registry.default_pair
        if pair.count(":") != 1 or not all(pair.split(":")):
            raise ConfigError(
                f"--pair {pair!r}: write SOURCE:TARGET, such as mnist:mnistm; named pairs: {', '.join(registry.pairs)}"
            )
        return Task.pair_of(*pair.split(":"))
    if req.pair:
        raise ConfigError(f"method '{req.method}' learns one dataset: use --dataset NAME, not --pair")
    return Task.single(req.dataset or registry.default_dataset)


def plan(req: RunRequest, manager: PluginManager) -> ResolvedConfig:
    """Resolve and check everything a run needs before any work starts."""
    method_cls = manager.method(req.method)
    registry = load_registry()
    task = plan_task(req, method_cls, registry)
    return resolve_with(manager, method_cls, task, preset=req.preset, overrides=req.overrides, registry=registry)


def resolve_with(
    manager: PluginManager,
    method_cls: type[Method],
    task: Task,
    *,
    preset: str | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    registry: Registry | None = None,
) -> ResolvedConfig:
    """`config.resolve` with what the task's registered datasets say: their own options (kept out
    of the config) and their run-setting defaults."""
    specs = {name: manager.dataset(name) for name in task.datasets}
    return resolve(
        method_cls,
        registry or load_registry(),
        task,
        preset=preset,
        overrides=overrides,
        dataset_options={name: set(spec.options) for name, spec in specs.items()},
        dataset_defaults={name: dict(spec.run_defaults) for name, spec in specs.items()},
    )


def load_domains(
    resolved: ResolvedConfig, manager: PluginManager, data_root: str | None, device: torch.device
) -> dict[str, Domain]:
    """Each role's dataset, decoded (or read from the cache), subset, brought to the run's
    common size and channel count, on the device."""
    from runner.batches import conform
    from runner.cache import check_writable, data_context, load_dataset
    from runner.context import Domain

    s = resolved.settings
    specs = {role: manager.dataset(name) for role, name in resolved.task.roles.items()}
    channels = s.channels or max(spec.channels for spec in specs.values())
    size = s.image_size or next(iter(specs.values())).size
    dctx = data_context(data_root)
    check_writable(dctx.cache_dir, "HW3_CACHE_DIR" if os.environ.get("HW3_CACHE_DIR") else "the dataset cache")
    registry = load_registry()
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


def experiment_name(task: Task) -> str:
    return f"hw3-{task.slug}"


def run_name(resolved: ResolvedConfig) -> str:
    return f"{resolved.method}-{resolved.task.slug}-seed{resolved.settings.seed}"


def execute(req: RunRequest, console: Console | None = None) -> RunResult:
    """Run a method to the end (or to an interruption); raises Hw3Error subclasses on failure."""
    import contextlib

    import torch

    from runner.checkpoint import RunLock, checkpoint_path
    from runner.context import RunContext
    from runner.devices import choose_compute, describe, pick_device
    from runner.distributed import broadcast_object, init, shutdown
    from runner.engine import StopFlag, fit
    from runner.sinks import NullSink
    from runner.tracking import Tracker, reap_orphans

    console = console or Console()
    manager = get_manager()
    tracker = Tracker()
    reap_orphans(tracker, console)
    resolved, state = _plan_resume(req, manager, tracker) if req.resume else (plan(req, manager), None)
    s = resolved.settings
    device = pick_device(s.device)
    compute = choose_compute(device, s.precision, s.channels_last)
    threads_before = torch.get_num_threads()
    dist, device = init(device)
    stack = contextlib.ExitStack()
    try:
        if req.resume and dist.is_main:  # refused while another process still trains this run
            stack.enter_context(RunLock(checkpoint_path(s.checkpoint_dir, req.resume).parent))
        if s.threads:
            torch.set_num_threads(s.threads)
        if not dist.is_main:  # rank 0 speaks, logs and checkpoints for the group
            console = Console(file=io.StringIO())
        with console.status("loading data (decoded once, then cached)"):
            domains = load_domains(resolved, manager, req.data_root, device)
        method = manager.method(req.method)(resolved.method_config)
        check_before_work(method, domains, resolved, dist.world)
        scaler = torch.amp.GradScaler(device.type) if compute.precision == "fp16" else None
        ctx = RunContext(resolved=resolved, device=device, domains=domains, scaler=scaler, dist=dist, compute=compute)
        # From the moment the MLflow run exists, Ctrl-C and SIGTERM stop it cleanly (KILLED, a checkpoint).
        stop = stack.enter_context(StopFlag(console))
        experiment = _open_run(req, method, ctx, tracker) if dist.is_main else ""
        ctx.run_id = broadcast_object(ctx.run_id, dist)
        if dist.is_main and not req.resume:
            stack.enter_context(RunLock(checkpoint_path(s.checkpoint_dir, ctx.run_id).parent))
        where = describe(device) + (f" x {dist.world} processes" if dist.enabled else "")
        head = f"[bold]{req.method}[/] on {resolved.task.label}  device {where}, {compute.describe()}"
        console.print(f"{head}  run {ctx.run_id}  experiment {experiment}", highlight=False)
        reg = manager.methods()[req.method]
        fitted = fit(
            method,
            ctx,
            tracker if dist.is_main else NullSink(),
            hooks=manager,
            console=console,
            resume=state,
            owner=f"method '{req.method}' (plugin '{reg.plugin}', {reg.package})",
            stop=stop,
        )
    except KeyboardInterrupt:  # before the run existed: nothing to save
        raise RunInterrupted("interrupted before the run started; nothing was saved") from None
    finally:
        stack.close()
        shutdown(dist)
        torch.set_num_threads(threads_before)  # a caller in the same process (a sweep, a test) keeps its own
    ckpt = checkpoint_path(resolved.settings.checkpoint_dir, ctx.run_id)
    return RunResult(
        ctx.run_id,
        experiment,
        fitted.status,
        fitted.metrics,
        tracker.uri,
        str(ckpt),
        resolved,
        seconds=fitted.seconds,
        steps=fitted.steps,
        history=fitted.history,
    )


def _open_run(req: RunRequest, method: Method, ctx: RunContext, tracker: Tracker) -> str:
    """Start the MLflow run (tags, params, config.json), or reopen the one being resumed; sets
    `ctx.run_id` and returns the experiment's name."""
    from runner.checkpoint import checkpoint_path, process_tag
    from runner.devices import describe
    from runner.tracking import CHECKPOINT_TAG, PROCESS_TAG, version_tags

    if req.resume:
        run = tracker.find_run(req.resume)
        tracker.reopen(req.resume)
        tracker.set_tags({PROCESS_TAG: process_tag()})
        ctx.run_id = req.resume
        return tracker.client.get_experiment(run.info.experiment_id).name
    resolved, task = ctx.resolved, ctx.task
    experiment = req.experiment or experiment_name(task)
    tags = {
        "method": req.method,
        **task.tags(),
        "seed": str(resolved.settings.seed),
        "device": describe(ctx.device),
        "compute": ctx.compute.describe(),
        "selection": "last",
        **version_tags(),
    }
    tags.update(row_tags(method.report_row()))
    tags[PROCESS_TAG] = process_tag()  # a later hw3 command marks the run KILLED if this process dies unsaid
    if ctx.dist.enabled:
        tags["hw3.processes"] = str(ctx.dist.world)
    if req.parent_run_id:
        tags["mlflow.parentRunId"] = req.parent_run_id  # nests the run under its parent in the UI
    tags.update(req.tags)
    ctx.run_id = tracker.start(experiment, req.run_name or run_name(resolved), tags)
    ckpt = checkpoint_path(resolved.settings.checkpoint_dir, ctx.run_id)
    tracker.set_tags({CHECKPOINT_TAG: str(ckpt)})  # shown in the UI; resuming never reads it
    tracker.log_params(
        {"method": req.method, **task.tags(), **resolved.flat(), CHECKPOINT_DIR_PARAM: str(ckpt.parent.parent)}
    )
    tracker.log_dict(resolved.to_dict(), "config.json")
    return experiment


def _checkpoint_folder(run: Any) -> str | None:
    """The folder holding a run's checkpoint folder: its own immutable param, or for a run made
    before that param existed, its `hw3.checkpoint` tag when the tag has the shape hw3 writes
    (`<folder>/<run id>/last.pt`; the file is loaded without running code either way)."""
    from runner.tracking import CHECKPOINT_TAG

    params, tags = run.data.params, run.data.tags
    if CHECKPOINT_DIR_PARAM in params:
        return params[CHECKPOINT_DIR_PARAM]
    tagged = Path(tags.get(CHECKPOINT_TAG, ""))
    if tagged.name == "last.pt" and tagged.parent.name == run.info.run_id:
        return str(tagged.parent.parent)
    return params.get("checkpoint_dir")


def row_tags(row: ReportRow | None) -> dict[str, str]:
    """The tags `hw3 report` reads a run's row from; an empty label keeps the run out of the table."""
    if row is None:
        return {"hw3.row": ""}
    return {"hw3.row": row.label, "hw3.row.place": str(row.place), "hw3.row.order": str(row.order)}


def _plan_resume(req: RunRequest, manager: PluginManager, tracker: Tracker) -> tuple[ResolvedConfig, TrainState]:
    """The config and checkpoint of the run being resumed. The checkpoint is found from the
    run's own checkpoint folder (an immutable param) and ID, never from an editable tag."""
    from runner.checkpoint import checkpoint_path, load

    run = tracker.find_run(req.resume)
    ran = run.data.tags.get("method")
    if ran != req.method:
        raise ConfigError(f"--resume {req.resume}: that is a '{ran}' run; use hw3 run {ran} --resume {req.resume}")
    folder = _checkpoint_folder(run)
    if not folder:
        raise Hw3Error(
            f"--resume {req.resume}: the run has no checkpoint folder in its params; it was not made by hw3 run"
        )
    changed = [k for k, _ in req.overrides if k not in RESUMABLE]
    if changed or req.preset or req.pair or req.dataset:
        what = ", ".join(changed) or "--preset/--pair/--dataset"
        raise ConfigError(
            f"--resume continues a run with its own config; {what} cannot change (only {', '.join(sorted(RESUMABLE))})"
        )
    state = load(checkpoint_path(folder, req.resume))
    saved = SavedConfig.from_dict(state.resolved)
    resolved = resolve_with(
        manager,
        manager.method(req.method),
        saved.task,
        # Checkpoints stay in the folder the run started with, whatever the working folder is now.
        overrides=[*saved.values.items(), *req.overrides, ("checkpoint_dir", folder)],
    )
    if state.epoch >= resolved.settings.epochs:
        raise ConfigError(
            f"--resume {req.resume}: the run already finished its {state.epoch} epochs; "
            f"pass --epochs N with N > {state.epoch} to train longer"
        )
    return resolved, state
