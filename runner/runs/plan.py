"""Planning a run: everything decided before any data is read or any run is opened.

`make_plan` turns a `RunRequest` into one `Plan` (the method class and its plugin, the registry,
the resolved config, the task, the resume state) that the rest of the run carries forward:
nothing after it looks a method up by name or reads registry.toml again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner import record
from runner.config import Registry, ResolvedConfig, SavedConfig, Task, load_registry, resolve
from runner.errors import ConfigError, Hw3Error

if TYPE_CHECKING:
    from runner.checkpoint import TrainState
    from runner.method import Method
    from runner.runs.plugins import PluginManager
    from runner.store import Store


@dataclass
class RunRequest:
    """What the CLI (or a test, a sweep, a suite) asks for."""

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
    sweep_setting: dict[str, str] | None = None  # a sweep child's grid values
    suite: record.SuiteItem | None = None  # a run of `hw3 reproduce`
    trial: record.TrialTags | None = None  # a run of a `hw3 tune` trial


@dataclass
class Resume:
    """The run a `--resume` continues: its checkpoint and its record in MLflow."""

    run_id: str
    state: TrainState
    record: record.RunRecord


@dataclass
class Plan:
    """One run, decided: carried from planning through data, the run record and the engine."""

    request: RunRequest
    method_cls: type[Method]
    plugin: str  # the plugin that registered the method, and its package
    package: str
    registry: Registry
    resolved: ResolvedConfig
    resume: Resume | None = None

    @property
    def task(self) -> Task:
        return self.resolved.task

    @property
    def owner(self) -> str:
        """Who to blame in an error: "method 'dann' (plugin 'dann', hw3)"."""
        return f"method '{self.request.method}' (plugin '{self.plugin}', {self.package})"

    @property
    def experiment(self) -> str:
        return self.request.experiment or experiment_name(self.task)

    @property
    def run_name(self) -> str:
        return self.request.run_name or run_name(self.resolved, self.request.overrides)

    def method(self) -> Method:
        return self.method_cls(self.resolved.method_config)


def make_plan(req: RunRequest, manager: PluginManager, tracker: Store | None = None) -> Plan:
    """Resolve and check everything a run needs before any work starts. A resume reads the run's
    record and checkpoint through `tracker` (one is opened when none is given)."""
    method_cls = manager.method(req.method)
    reg = manager.methods()[req.method]
    registry = load_registry()
    if req.resume:
        from runner.store import reader

        resolved, resume = _plan_resume(req, manager, method_cls, registry, tracker or reader())
        return Plan(req, method_cls, reg.plugin, reg.package, registry, resolved, resume)
    task = plan_task(req, method_cls, registry)
    resolved = resolve_with(manager, method_cls, task, preset=req.preset, overrides=req.overrides, registry=registry)
    return Plan(req, method_cls, reg.plugin, reg.package, registry, resolved)


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


def experiment_name(task: Task) -> str:
    return f"hw3-{task.slug}"


# Settings that say how a run computes or logs, or that a resume may change: left out of its name.
_UNNAMED = {
    *record.RESUMABLE, "seed", "threads", "precision", "channels_last", "compile", "cuda_graphs", "tsne_points",
    "checkpoint_dir",
}  # fmt: skip


def run_name(resolved: ResolvedConfig, overrides: list[tuple[str, Any]] | None = None) -> str:
    """`dann-mnist-mnistm-seed0`, with the settings given on the command line that change what is
    trained (`dann-mnist-mnistm-lr=0.001-seed0`), so runs of one method tell apart in the UI."""
    flat = resolved.flat()
    changed = dict.fromkeys(k for k, _ in overrides or [] if k not in _UNNAMED and k in flat)
    parts = [resolved.method, resolved.task.slug, *(f"{k}={flat[k]}" for k in changed)]
    return "-".join([*parts, f"seed{resolved.settings.seed}"])[:250]


def _plan_resume(
    req: RunRequest, manager: PluginManager, method_cls: type[Method], registry: Registry, tracker: Store
) -> tuple[ResolvedConfig, Resume]:
    """The config and checkpoint of the run being resumed. The checkpoint is found from the
    run's own checkpoint folder (an immutable param) and ID, never from an editable tag."""
    from runner.checkpoint import checkpoint_path, load

    assert req.resume
    run = tracker.find_run(req.resume)
    if record.is_parent(run):
        raise ConfigError(
            f"--resume {req.resume}: that is the parent run of --seeds or a sweep; resume one of its child runs"
        )
    rec = record.RunRecord.from_run(run)
    if rec.method != req.method:
        raise ConfigError(
            f"--resume {req.resume}: that is a '{rec.method}' run; use hw3 run {rec.method} --resume {req.resume}"
        )
    if not rec.checkpoint_dir:
        raise Hw3Error(
            f"--resume {req.resume}: the run has no checkpoint folder in its params; it was not made by hw3 run"
        )
    changed = [k for k, _ in req.overrides if k not in record.RESUMABLE]
    if changed or req.preset or req.pair or req.dataset:
        what = ", ".join(changed) or "--preset/--pair/--dataset"
        raise ConfigError(
            f"--resume continues a run with its own config; {what} cannot change "
            f"(only {', '.join(sorted(record.RESUMABLE))})"
        )
    state = load(checkpoint_path(rec.checkpoint_dir, req.resume))
    saved = SavedConfig.from_dict(state.resolved)
    resolved = resolve_with(
        manager,
        method_cls,
        saved.task,
        # Checkpoints stay in the folder the run started with, whatever the working folder is now.
        overrides=[*saved.values.items(), *req.overrides, ("checkpoint_dir", rec.checkpoint_dir)],
        registry=registry,
    )
    if state.epoch >= resolved.settings.epochs:
        raise ConfigError(
            f"--resume {req.resume}: the run already finished its {state.epoch} epochs; "
            f"pass --epochs N with N > {state.epoch} to train longer"
        )
    return resolved, Resume(req.resume, state, rec)
