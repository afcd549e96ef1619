"""`hw3 reproduce SUITE`: every run of a suite from registry.toml, then one report folder.

Each run is tagged with its suite, its item and a hash of the settings given on the command
line, so running the command again reuses finished runs, resumes interrupted ones from their
checkpoints and starts only what is missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from runner import record
from runner.config import load_registry
from runner.errors import ConfigError, Hw3Error, RunInterrupted, choices_hint
from runner.plan import Plan, RunRequest, make_plan
from runner.plugins import get_manager
from runner.progress import fmt_value
from runner.run import RunResult, execute


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
    status: str  # FINISHED, reused, FAILED
    note: str = ""


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
    from runner.tracking import Tracker

    runs = Tracker().search(
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
) -> tuple[Path, list[Outcome]]:
    """Run (or reuse, or resume) every run of `suite`, then write its report folder. With
    `workers` above 1 (or "auto" resolving so, `runner.workers`), the runs still to make go that
    many at a time, each in a process of its own (`runner.pool.side_by_side`)."""
    from runner.commands.suite_report import write_report
    from runner.workers import resolve_workers

    console = console or Console()
    overrides = overrides or []
    description, items = load_suite(suite)
    plans = requests(suite, items, preset, overrides, data_root, device)
    digest = settings_hash(preset, overrides, data_root)
    earlier = previous_runs(suite, digest)
    where = [("device", device)] if device else []
    todo: dict[int, RunRequest | Plan] = {}  # what still runs: a new run's plan or a resume
    for i, (item, planned) in enumerate(zip(items, plans, strict=True)):
        run = earlier.get(item.key)
        if run is not None and run.info.status == "KILLED":
            todo[i] = RunRequest(item.method, resume=run.info.run_id, data_root=data_root, overrides=where)
        elif run is None or run.info.status != "FINISHED":
            todo[i] = planned
    pending = [plans[i] for i in todo]
    n_workers = resolve_workers(workers, pending[0].resolved.settings.device, len(pending)) if pending else 1
    if n_workers > 1:
        outcomes = _side_by_side(items, plans, todo, earlier, n_workers, console)
    else:
        outcomes = _one_after_another(items, plans, todo, earlier, console)
    path = write_report(suite, description, outcomes, out or Path("reports") / suite, digest)
    return path, outcomes


def _one_after_another(
    items: list[Item], plans: list[Plan], todo: dict[int, RunRequest | Plan], earlier: dict[str, Any], console: Console
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for n, (item, planned) in enumerate(zip(items, plans, strict=True), start=1):
        head = f"[bold]({n}/{len(items)})[/] {item.key}"
        req = todo.get(n - 1)
        if req is None:
            run = earlier[item.key]
            console.print(f"{head}: finished earlier, run {run.info.run_id}", highlight=False)
            outcomes.append(Outcome(item, run.info.run_id, "reused"))
            continue
        if isinstance(req, RunRequest) and req.resume:
            console.print(f"{head}: resuming run {req.resume} from its checkpoint", highlight=False)
        else:
            console.print(head, highlight=False)
        try:
            result = execute(req, console)
            outcomes.append(Outcome(item, result.run_id, result.status))
            primary = planned.method_cls.primary_metric
            if primary in result.metrics:
                console.print(f"  {primary} {fmt_value(primary, result.metrics[primary])}", highlight=False)
        except RunInterrupted:
            raise
        except Hw3Error as exc:  # one failed run leaves a gap in the report, not a lost suite
            console.print(f"[red]failed:[/] {escape(str(exc))}", highlight=False)
            outcomes.append(Outcome(item, None, "FAILED", str(exc)))
    return outcomes


def _side_by_side(
    items: list[Item],
    plans: list[Plan],
    todo: dict[int, RunRequest | Plan],
    earlier: dict[str, Any],
    workers: int,
    console: Console,
) -> list[Outcome]:
    """The runs still to make in `workers` processes at once, a line for each as it ends; the
    outcomes in the suite's order, as one after another gives them."""
    from runner.pool import Job, side_by_side

    found: dict[int, Outcome] = {}
    for n, item in enumerate(items, start=1):
        head = f"[bold]({n}/{len(items)})[/] {item.key}"
        req = todo.get(n - 1)
        if req is None:
            run = earlier[item.key]
            console.print(f"{head}: finished earlier, run {run.info.run_id}", highlight=False)
            found[n - 1] = Outcome(item, run.info.run_id, "reused")
        elif isinstance(req, RunRequest) and req.resume:
            console.print(f"{head}: to resume run {req.resume} from its checkpoint", highlight=False)
    order = list(todo)  # the jobs' indices in the suite
    jobs = [
        Job(req.request if isinstance(req, Plan) else req, items[i].key, plans[i].resolved.settings.device)
        for i, req in todo.items()
    ]

    def ended(k: int, outcome: Callable[[], RunResult]) -> None:
        i = order[k]
        item, head = items[i], f"[bold]({i + 1}/{len(items)})[/] {items[i].key}"
        try:
            result = outcome()
        except RunInterrupted:
            raise
        except Hw3Error as exc:  # one failed run leaves a gap in the report, not a lost suite
            console.print(f"{head}: [red]failed:[/] {escape(str(exc))}", highlight=False)
            found[i] = Outcome(item, None, "FAILED", str(exc))
            return
        found[i] = Outcome(item, result.run_id, result.status)
        primary = plans[i].method_cls.primary_metric
        shown = f"{primary} {fmt_value(primary, result.metrics[primary])}" if primary in result.metrics else ""
        console.print(f"{head}: {shown or result.status}  run {result.run_id}", highlight=False)

    try:
        side_by_side(jobs, workers, console, ended)
    except RunInterrupted as exc:
        why = f"{exc}; " if str(exc) else ""
        left = len(items) - len(found)
        stopped = RunInterrupted(
            f"{why}the suite stopped with {left} of {len(items)} runs to make; run the same command again to resume"
        )
        stopped.run_id = exc.run_id
        raise stopped from None
    return [found[i] for i in range(len(items))]
