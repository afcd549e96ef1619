"""`hw3 reproduce SUITE`: every run of a suite from registry.toml, then one report folder.

Each run is tagged with its suite, its item and a hash of the settings given on the command
line, so running the command again reuses finished runs, resumes interrupted ones from their
checkpoints and starts only what is missing.
"""

from __future__ import annotations

import hashlib
import json
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
from runner.run import execute


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
    blob = json.dumps({"preset": preset, "set": sorted(map(list, overrides)), "data_root": data_root}, default=str)
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
) -> tuple[Path, list[Outcome]]:
    """Run (or reuse, or resume) every run of `suite`, then write its report folder."""
    from runner.commands.suite_report import write_report

    console = console or Console()
    overrides = overrides or []
    description, items = load_suite(suite)
    plans = requests(suite, items, preset, overrides, data_root, device)
    digest = settings_hash(preset, overrides, data_root)
    earlier = previous_runs(suite, digest)
    outcomes: list[Outcome] = []
    for n, (item, planned) in enumerate(zip(items, plans, strict=True), start=1):
        req: RunRequest | Plan = planned
        head = f"[bold]({n}/{len(items)})[/] {item.key}"
        run = earlier.get(item.key)
        if run is not None and run.info.status == "FINISHED":
            console.print(f"{head}: finished earlier, run {run.info.run_id}", highlight=False)
            outcomes.append(Outcome(item, run.info.run_id, "reused"))
            continue
        if run is not None and run.info.status == "KILLED":
            console.print(f"{head}: resuming run {run.info.run_id} from its checkpoint", highlight=False)
            where = [("device", device)] if device else []
            req = RunRequest(item.method, resume=run.info.run_id, data_root=data_root, overrides=where)
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
    path = write_report(suite, description, outcomes, out or Path("reports") / suite, digest)
    return path, outcomes
