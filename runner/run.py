"""One `hw3 run`, start to end: config -> data -> method -> engine -> tracking.

The data flows one way. Nothing here knows a particular method or dataset.
"""

from __future__ import annotations

import io
import traceback
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from runner.config import ResolvedConfig, load_registry, resolve
from runner.errors import ConfigError, Hw3Error, RunFailed, RunInterrupted
from runner.plugins import PluginManager, get_manager
from runner.selection import select


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
    parent_run_id: str | None = None  # set for each seed's child run under `hw3 run --seeds`
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


RESUMABLE = {"epochs", "device", "eval_batch_size", "log_every"}


def plan(req: RunRequest, manager: PluginManager) -> ResolvedConfig:
    """Resolve and check everything a run needs before any work starts."""
    method_cls = manager.method(req.method)
    registry = load_registry()
    source = target = dataset = None
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
        source, target = pair.split(":")
        for name in (source, target):
            manager.dataset(name)
    else:
        if req.pair:
            raise ConfigError(f"method '{req.method}' learns one dataset: use --dataset NAME, not --pair")
        dataset = req.dataset or registry.default_dataset
        manager.dataset(dataset)
    own = {name: set(manager.dataset(name).options) for name in (source, target, dataset) if name}
    return resolve(
        method_cls,
        registry,
        source=source,
        target=target,
        dataset=dataset,
        preset=req.preset,
        overrides=req.overrides,
        dataset_options=own,
    )


def load_domains(
    resolved: ResolvedConfig, manager: PluginManager, data_root: str | None, device: Any
) -> dict[str, Any]:
    from runner.data import conform, data_context, load_dataset
    from runner.engine import Domain

    s = resolved.settings
    roles = {"source": resolved.source, "target": resolved.target} if resolved.source else {"data": resolved.dataset}
    specs = {role: manager.dataset(name) for role, name in roles.items()}
    channels = s.channels or max(spec.channels for spec in specs.values())
    size = s.image_size or next(iter(specs.values())).size
    dctx = data_context(data_root)
    registry = load_registry()
    domains = {}
    for role, spec in specs.items():
        try:
            splits = load_dataset(spec, dctx.for_dataset(spec, registry.datasets.get(spec.name)))
        except Hw3Error:
            raise
        except Exception as exc:  # a dataset plugin's own bug: name it rather than dump a traceback
            where = manager.datasets()[spec.name]
            raise Hw3Error(
                f"dataset '{spec.name}' (plugin '{where.plugin}', {where.package}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for needed in ("train", "test"):
            if needed not in splits:
                raise Hw3Error(f"dataset '{spec.name}' has no '{needed}' split (it has {', '.join(splits)})")
        train = conform(splits["train"].subset(s.train_subset), channels, size).to(device)
        test = conform(splits["test"].subset(s.test_subset), channels, size).to(device)
        domains[role] = Domain(spec.name, train, test, spec.classes)
    return domains


def experiment_name(resolved: ResolvedConfig) -> str:
    return f"hw3-{resolved.source}-{resolved.target}" if resolved.source else f"hw3-{resolved.dataset}"


def execute(req: RunRequest, console: Console | None = None) -> RunResult:
    """Run a method to the end (or to an interruption); raises Hw3Error subclasses on failure."""
    import torch

    from runner import checkpoint, distributed, engine, tracking
    from runner.devices import describe, pick_device
    from runner.engine import RunContext, checkpoint_path

    console = console or Console()
    manager = get_manager()
    tracker = tracking.Tracker()
    resume_state = None
    if req.resume:
        resolved, resume_state = _plan_resume(req, manager, tracker)
    else:
        resolved = plan(req, manager)
    s = resolved.settings
    device = pick_device(s.device)
    dist, device = distributed.init(device)
    if not dist.is_main:  # rank 0 speaks, logs and checkpoints for the group
        console, tracker = Console(file=io.StringIO()), tracking.Silent(tracker)
    if device.type == "cpu":
        # Subnormal floats make x86 arithmetic ~100x slower; adversarial training drifts into
        # them (a DCGAN epoch went from 7 s to 40 s). Flushing them to zero costs no accuracy.
        torch.set_flush_denormal(True)
    checkpoint.seed_everything(s.seed)
    with console.status("loading data (decoded once, then cached)"):
        domains = load_domains(resolved, manager, req.data_root, device)
    method_cls = manager.method(req.method)
    method = method_cls(resolved.method_config)
    scaler = None
    if device.type == "cuda" and s.precision == "fp16":
        scaler = torch.amp.GradScaler("cuda")
    ctx = RunContext(resolved=resolved, device=device, domains=domains, scaler=scaler, dist=dist)
    ctx.steps_per_epoch = engine.steps_per_epoch(method, ctx)

    experiment = req.experiment or experiment_name(resolved)
    if req.resume:
        experiment = tracker.client.get_experiment(tracker.find_run(req.resume).info.experiment_id).name
        tracker.reopen(req.resume)
        ctx.run_id = req.resume
    else:
        where = {"pair": resolved.pair} if resolved.pair else {"dataset": resolved.dataset}
        tags = {
            "method": req.method,
            **where,
            "seed": str(s.seed),
            "device": describe(device),
            "selection": "last",
            **tracking.version_tags(),
        }
        tags.update(req.tags)
        if dist.enabled:
            tags["hw3.processes"] = str(dist.world)
        if req.parent_run_id:
            tags["mlflow.parentRunId"] = req.parent_run_id  # nests the run under its parent in the UI
        ctx.run_id = tracker.start(experiment, req.run_name or _run_name(resolved), tags)
        ckpt = checkpoint_path(s, ctx.run_id)
        tracker.set_tags({tracking.CHECKPOINT_TAG: str(ckpt)})
        tracker.log_params({"method": req.method, **where, **resolved.flat()})
        tracker.log_dict(resolved.to_dict(), "config.json")
    ctx.run_id = distributed.broadcast_object(ctx.run_id, dist)
    ckpt = checkpoint_path(s, ctx.run_id)
    where_run = f"{describe(device)}" + (f" x {dist.world} processes" if dist.enabled else "")
    console.print(
        f"[bold]{req.method}[/] on {resolved.pair or resolved.dataset}  device {where_run}  "
        f"run {ctx.run_id}  experiment {experiment}",
        highlight=False,
    )

    status, metrics = "FAILED", {}
    try:
        method.setup(ctx)
        if dist.is_main:
            manager.run_start(ctx)
        history = engine.train(
            method,
            ctx,
            log_metrics=tracker.log_metrics,
            on_epoch_end=(lambda epoch, m: _epoch_end(method, ctx, tracker, manager, epoch, m))
            if dist.is_main
            else (lambda epoch, m: None),
            console=console,
            resume_state=resume_state,
        )
        metrics = history[-1] if history else {}
        if dist.is_main:  # the other ranks hold the same model; rank 0 reports it
            with console.status("final metrics, figures and the model"):
                metrics = _final_outputs(method, ctx, tracker, history, metrics)
        status = "FINISHED"
    except RunInterrupted:
        status = "KILLED"
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise RunInterrupted(f"aborted; the checkpoint of the last finished epoch is kept at {ckpt}") from None
    except Hw3Error as exc:
        if tb := getattr(exc, "traceback", None):  # a plugin's lifecycle hook raised
            tracker.log_text(tb, "error.txt")
        raise
    except Exception as exc:
        tracker.log_text(traceback.format_exc(), "error.txt")
        where = manager.methods()[req.method]
        raise RunFailed(
            f"method '{req.method}' (plugin '{where.plugin}', {where.package}) raised {type(exc).__name__}: {exc}; "
            f"traceback saved as error.txt in run {ctx.run_id}"
        ) from exc
    finally:
        tracker.end(status)
        try:
            if dist.is_main:
                manager.run_end(ctx, status, metrics)
        except Hw3Error as exc:
            if status == "FINISHED":
                raise
            console.print(f"[yellow]warning: {exc}")
        finally:
            distributed.shutdown(dist)
    return RunResult(ctx.run_id, experiment, status, metrics, tracker.uri, str(ckpt), resolved)


def _final_outputs(method: Any, ctx: Any, tracker: Any, history: list[dict], metrics: dict) -> dict[str, float]:
    """Summary metrics and selections, figures and the model, logged once training is over."""
    from runner.viz import curves_figure

    final = {**method.summarize(ctx), **select(history)}
    if final:
        tracker.log_metrics(final, ctx.epoch)
        metrics = {**metrics, **final}
    where = ctx.resolved.pair or ctx.resolved.dataset
    figures = {"curves.png": curves_figure(history, f"{ctx.resolved.method} on {where}")}
    figures.update(method.figures(ctx))
    for name, fig in figures.items():
        tracker.log_figure(fig, f"figures/{name}")
    model = method.inference_model()
    if model is not None:
        tracker.log_model(model, method.inference_example(ctx))
    return metrics


def _epoch_end(method: Any, ctx: Any, tracker: Any, manager: PluginManager, epoch: int, metrics: dict) -> None:
    for key, image in method.images(ctx).items():
        tracker.log_image(image, key, epoch)
    manager.epoch_end(ctx, epoch, metrics)


def _run_name(resolved: ResolvedConfig) -> str:
    where = f"{resolved.source}-{resolved.target}" if resolved.source else resolved.dataset
    return f"{resolved.method}-{where}-seed{resolved.settings.seed}"


def _plan_resume(req: RunRequest, manager: PluginManager, tracker: Any) -> tuple[ResolvedConfig, dict[str, Any]]:
    from pathlib import Path

    from runner import checkpoint, tracking

    run = tracker.find_run(req.resume)
    ran = run.data.tags.get("method")
    if ran != req.method:
        raise ConfigError(f"--resume {req.resume}: that is a '{ran}' run; use hw3 run {ran} --resume {req.resume}")
    path = run.data.tags.get(tracking.CHECKPOINT_TAG)
    if not path:
        raise Hw3Error(
            f"--resume {req.resume}: the run has no '{tracking.CHECKPOINT_TAG}' tag; it was not made by hw3 run"
        )
    state = checkpoint.load(Path(path))
    saved = state["resolved"]
    changed = [k for k, _ in req.overrides if k not in RESUMABLE]
    if changed or req.preset or req.pair or req.dataset:
        what = ", ".join(changed) or "--preset/--pair/--dataset"
        raise ConfigError(
            f"--resume continues a run with its own config; {what} cannot change (only {', '.join(sorted(RESUMABLE))})"
        )
    registry = load_registry()
    method_cls = manager.method(req.method)
    names = (saved["source"], saved["target"], saved["dataset"])
    resolved = resolve(
        method_cls,
        registry,
        source=saved["source"],
        target=saved["target"],
        dataset=saved["dataset"],
        overrides=[*saved["config"].items(), *req.overrides],
        dataset_options={n: set(manager.dataset(n).options) for n in names if n},
    )
    if state["epoch"] >= resolved.settings.epochs:
        raise ConfigError(
            f"--resume {req.resume}: the run already finished its {state['epoch']} epochs; "
            f"pass --epochs N with N > {state['epoch']} to train longer"
        )
    return resolved, state
