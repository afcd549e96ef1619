"""`hw3 reproduce SUITE`: every run of a suite from registry.toml, then one report folder.

Each run is tagged with its suite, its item and a hash of the settings given on the command
line, so running the command again reuses finished runs, resumes interrupted ones from their
checkpoints and starts only what is missing. Several `hw3 reproduce` processes sharing one
MLflow store (on several machines) share the work: a run another process is making is not
started again, and when two start the same run at once the later one stands down.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from runner import record
from runner.config import load_registry
from runner.errors import ConfigError, Hw3Error, MadeElsewhere, choices_hint
from runner.runs.parent import Child, fan_out
from runner.runs.plan import Plan, RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.pool import Placement, RunWork

if TYPE_CHECKING:
    from runner.runs.slurm import SlurmExecutor


@dataclass
class Item:
    """One run of a suite: a method on a pair or a dataset, with its own settings."""

    method: str
    pair: str | None = None
    dataset: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return self.pair or self.dataset or ""

    @property
    def key(self) -> str:
        return " ".join([self.method, self.where, *(f"{k}={v}" for k, v in sorted(self.settings.items()))])


@dataclass
class Outcome:
    item: Item
    run_id: str | None
    status: str  # FINISHED, reused, FAILED, queued (in Slurm), elsewhere (another process makes it)
    note: str = ""


@dataclass(frozen=True)
class Elsewhere:
    """What a suite's run comes back as when another process makes it."""

    run_id: str
    where: str  # that process, PID@HOST:START


@dataclass
class SuiteRun(RunWork):
    """One run of a suite, which stands down when another process makes the same item
    (`runner.errors.MadeElsewhere`)."""

    def __call__(self, place: Placement) -> Any:
        try:
            return super().__call__(place)
        except MadeElsewhere as exc:
            place.console.print(f"{exc.run_id}: made by {exc.where or 'another process'}; not run here")
            return Elsewhere(exc.run_id, exc.where)


def load_suite(name: str) -> tuple[str, list[Item]]:
    """The suite's description and runs, checked for shape (one-line errors naming the file)."""
    registry = load_registry()
    where = registry.path
    if name not in registry.suites:
        raise ConfigError(
            f"no suite '{name}' in {where}{choices_hint(name, sorted(registry.suites))}; add [suites.{name}] there"
        )
    suite = registry.suites[name]
    runs = suite.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{where}: [suites.{name}] needs runs = [ {{ method = ..., pair = ... }}, ... ]")
    items = []
    for i, raw in enumerate(runs, start=1):
        if not isinstance(raw, dict) or "method" not in raw:
            raise ConfigError(f'{where}: [suites.{name}] run {i} needs a method, such as {{ method = "dann" }}')
        unknown = set(raw) - {"method", "pair", "dataset", "set"}
        if unknown:
            raise ConfigError(
                f"{where}: [suites.{name}] run {i} has unknown key(s) {sorted(unknown)}; use method, pair, dataset, set"
            )
        items.append(Item(raw["method"], raw.get("pair"), raw.get("dataset"), dict(raw.get("set", {}))))
    seeds = suite.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"{where}: [suites.{name}] seeds must be a list of non-negative integers, such as [0, 1, 2]")
    if seeds:  # each run once per seed, unless it names its own seed; the report shows mean ± std
        items = [
            it if "seed" in it.settings else Item(it.method, it.pair, it.dataset, {**it.settings, "seed": seed})
            for it in items
            for seed in (seeds if "seed" not in it.settings else [None])
        ]
    return str(suite.get("description", "")), items


def settings_hash(preset: str | None, overrides: list[tuple[str, Any]], data_root: str | None) -> str:
    # Values as text: `epochs=2` from Python and `--set epochs=2` from the command line are one suite.
    settings = sorted([str(k), str(v)] for k, v in overrides)
    blob = json.dumps({"preset": preset, "set": settings, "data_root": data_root})
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def requests(
    suite: str,
    items: list[Item],
    preset: str | None,
    overrides: list[tuple[str, Any]],
    data_root: str | None,
    device: str | None = None,
) -> list[Plan]:
    """One plan per item, every one made before the first run (so any bad key or value fails
    first). `device` is where they run: not a setting of the suite, so runs made on another
    device are still reused."""
    manager = get_manager()
    digest = settings_hash(preset, overrides, data_root)
    where = [("device", device)] if device else []
    out = []
    for item in items:
        req = RunRequest(
            item.method,
            pair=item.pair,
            dataset=item.dataset,
            preset=preset,
            overrides=[*item.settings.items(), *overrides, *where],
            data_root=data_root,
            suite=record.SuiteItem(suite, item.key, digest),
        )
        try:
            out.append(make_plan(req, manager))
        except Hw3Error as exc:
            raise type(exc)(f"suite '{suite}', run '{item.key}': {exc}") from None
    return out


def previous_runs(suite: str, digest: str) -> dict[str, Any]:
    """The newest earlier run of each item of this suite with these settings."""
    from runner.store import reader

    runs = reader().search(
        f"tags.`{record.SUITE}` = '{suite}' and tags.`{record.SUITE_SETTINGS}` = '{digest}'", limit=1000
    )
    newest: dict[str, Any] = {}
    for run in runs:
        newest.setdefault(run.data.tags.get(record.SUITE_ITEM, ""), run)
    return newest


def reproduce(
    suite: str,
    preset: str | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    data_root: str | None = None,
    out: Path | None = None,
    console: Console | None = None,
    device: str | None = None,
    workers: int | str = 1,
    executor: SlurmExecutor | None = None,
) -> tuple[Path, list[Outcome]]:
    """Run (or reuse, or resume) every run of `suite`, then write its report folder. With
    `workers` above 1 (or "auto" resolving so, `runner.runs.placement`), the runs still to make go
    that many at a time, each in a process of its own (`runner.runs.pool`); with a Slurm
    `executor`, as one job array, and a run whose task is still queued or running (an earlier
    `--no-wait`, another `hw3 reproduce`) is not submitted again."""
    from runner.commands.suite_report import write_report
    from runner.runs.placement import resolve_workers

    console = console or Console()
    overrides = overrides or []
    description, items = load_suite(suite)
    plans = requests(suite, items, preset, overrides, data_root, device)
    digest = settings_hash(preset, overrides, data_root)
    earlier = previous_runs(suite, digest)
    where = [("device", device)] if device else []
    todo: dict[int, RunRequest | Plan] = {}  # what still runs: a new run's plan or a resume
    busy = _in_slurm(executor, suite, digest)
    queued: dict[int, Outcome] = {}
    for i, (item, planned) in enumerate(zip(items, plans, strict=True)):
        run = earlier.get(item.key)
        if run is not None and run.info.status == "FINISHED":
            continue  # reused, even while its Slurm task is still ending (squeue lists it until it exits)
        if item.key in busy:
            console.print(f"{item.key}: in Slurm task {busy[item.key]}, not submitted again", highlight=False)
            queued[i] = Outcome(item, run.info.run_id if run is not None else None, "queued", busy[item.key])
        elif run is not None and run.info.status == "RUNNING":  # its process lives (reap_orphans ran first)
            made_by = run.data.tags.get(record.PROCESS, "another process")
            console.print(f"{item.key}: run {run.info.run_id} is being made by {made_by}, not started again",
                          highlight=False)  # fmt: skip
            queued[i] = Outcome(item, run.info.run_id, "elsewhere", made_by)
        elif run is not None and run.info.status == "KILLED":
            todo[i] = RunRequest(item.method, resume=run.info.run_id, data_root=data_root, overrides=where)
        else:
            todo[i] = planned
    pending = [plans[i] for i in todo]
    n_workers = resolve_workers(workers, pending[0].resolved.settings.device, len(pending)) if pending else 1
    if executor is not None:
        executor.labels = [_task_label(suite, digest, items[i].key) for i in todo]
    outcomes = _make(items, plans, todo, earlier, n_workers, console, executor, queued)
    waiting = sum(o.status in ("queued", "elsewhere") for o in outcomes)
    if waiting:
        console.print(f"{waiting} run(s) still being made elsewhere (in Slurm or by another process): run the same "
                      "command again once they end", highlight=False)  # fmt: skip
    path = write_report(suite, description, outcomes, out or Path("reports") / suite, digest)
    return path, outcomes


def _make(
    items: list[Item],
    plans: list[Plan],
    todo: dict[int, RunRequest | Plan],
    earlier: dict[str, Any],
    workers: int,
    console: Console,
    executor: SlurmExecutor | None = None,
    queued: dict[int, Outcome] | None = None,
) -> list[Outcome]:
    """The runs still to make, through `fan_out` (one after another, or `workers` at a time, or
    as Slurm tasks); the outcomes in the suite's order. A failed run leaves a gap in the report,
    not a lost suite. `queued`: the outcomes of runs still in Slurm."""
    found: dict[int, Outcome] = dict(queued or {})
    for n, item in enumerate(items, start=1):
        head = f"[bold]({n}/{len(items)})[/] {item.key}"
        req = todo.get(n - 1)
        if n - 1 in found:
            continue
        if req is None:
            run = earlier[item.key]
            console.print(f"{head}: finished earlier, run {run.info.run_id}", highlight=False)
            found[n - 1] = Outcome(item, run.info.run_id, "reused")
        elif isinstance(req, RunRequest) and req.resume:
            console.print(f"{head}: to resume run {req.resume} from its checkpoint", highlight=False)
    order = list(todo)  # the children's indices in the suite
    children = [Child(SuiteRun(req.request if isinstance(req, Plan) else req), items[i].key)
                for i, req in todo.items()]  # fmt: skip
    primaries = {plans[i].method_cls.primary_metric for i in order}
    primary = primaries.pop() if len(primaries) == 1 else ""
    device = plans[order[0]].resolved.settings.device if order else "auto"
    done = fan_out(
        children, keep_going=True, what="suite", primary=primary, stop_hint="run the same command again to resume",
        console=console, workers=workers, device=device, executor=executor,
    )  # fmt: skip
    for k, run in zip(order, done.runs, strict=True):
        if isinstance(run.result, Elsewhere):
            found[k] = Outcome(items[k], run.result.run_id, "elsewhere", run.result.where)
        elif run.result is not None:
            found[k] = Outcome(items[k], run.result.run_id, run.result.status)
        else:
            found[k] = Outcome(items[k], None, "FAILED", run.error or "")
    return [found[i] for i in range(len(items))]


def _task_label(suite: str, digest: str, key: str) -> str:
    return f"{suite}|{digest}|{key}"


def _in_slurm(executor: SlurmExecutor | None, suite: str, digest: str) -> dict[str, str]:
    """Item key -> Slurm task, for this suite's runs (with these settings) whose tasks are still
    queued or running, as the log folder's manifest and squeue say."""
    from runner.runs.slurm import live_jobs, read_manifest

    if executor is None:
        return {}
    start = _task_label(suite, digest, "")
    tasks = {job: label.removeprefix(start) for job, label in read_manifest(executor.options.logs).items()
             if label.startswith(start)}  # fmt: skip
    alive = live_jobs(list(tasks))
    return {key: job for job, key in tasks.items() if job in alive}
