"""`hw3 sweep`: every combination of some config values (times seeds) as child runs of one parent run.

Everything is checked before the first run starts: each grid key and value goes through the same
config resolution as `hw3 run --set`, so a typo costs a second, not a half-finished sweep. The
parent run ends with the method's primary metric per setting (mean and std over seeds) as
metrics and as `sweep.md`/`sweep.json`.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.config import coerce, config_fields
from runner.errors import ConfigError, choices_hint
from runner.progress import fmt_value
from runner.record import ParentRecord
from runner.runs.parent import Child, Executor, FanOut, Parent, Summary, fan_out, mean_std
from runner.runs.placement import resolve_workers
from runner.runs.plan import Plan, RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.pool import RunWork


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`--grid key=v1,v2` items as {key: [v1, v2]}, in the order given; malformed ones are errors."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {item!r}: write KEY=V1,V2, such as --grid lr=0.001,0.01")
        values = [v.strip() for v in raw.split(",")]
        if not all(values):
            raise ConfigError(f"--grid {item!r}: a value is empty; write KEY=V1,V2, such as --grid lr=0.001,0.01")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values once, such as --grid {key}=V1,V2")
        grid[key] = values
    if not grid:
        raise ConfigError("hw3 sweep needs at least one --grid KEY=V1,V2")
    return grid


@dataclass
class Row:
    """One grid setting and what its runs gave."""

    setting: dict[str, str]
    planned: int
    runs: list[tuple[int, str, float | None]] = field(default_factory=list)  # (seed, run ID, primary metric)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (seed, error)

    @property
    def values(self) -> list[float]:
        return [v for _, _, v in self.runs if v is not None]

    @property
    def mean(self) -> float | None:
        return mean_std(self.values)[0] if self.values else None

    @property
    def std(self) -> float | None:
        return mean_std(self.values)[1] if self.values else None


@dataclass
class SweepResult:
    parent_run_id: str
    experiment: str
    method: str
    where: str  # the pair or the dataset
    primary_metric: str
    grid: dict[str, list[str]]
    seeds: list[int]
    rows: list[Row]
    status: str = "RUNNING"

    @property
    def failed(self) -> int:
        return sum(len(r.failed) for r in self.rows)


def settings_of(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination, the first key varying slowest."""
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _label(setting: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items())


def check(req: RunRequest, grid: dict[str, list[str]], seeds: list[int] | None) -> Plan:
    """Check the whole sweep as `hw3 run` checks one run, before anything starts; the base plan."""
    manager = get_manager()
    if req.resume:
        raise ConfigError("hw3 sweep starts new runs; resume a child run on its own with hw3 run --resume RUN_ID")
    given = {k for k, _ in req.overrides}
    if seeds is not None and "seed" in given:
        raise ConfigError("give either --set seed=N or --seeds, not both")
    base = make_plan(req, manager)
    method_cls = base.method_cls
    fields = config_fields(method_cls)
    for key, values in grid.items():
        if key == "seed":
            raise ConfigError("--grid seed: use --seeds 0,1,2 to repeat each setting over seeds")
        if key not in fields:
            raise ConfigError(
                f"--grid: unknown config key '{key}' for method '{req.method}'{choices_hint(key, list(fields))}"
            )
        if key in given:
            raise ConfigError(f"'{key}' is in both --set and --grid; give it in one place")
        seen: dict[Any, str] = {}
        for value in values:
            typed = coerce(value, fields[key][0], f"--grid {key}")
            if typed in seen:
                raise ConfigError(f"--grid {key}: {seen[typed]!r} and {value!r} are the same value")
            seen[typed] = value
    for setting in settings_of(grid):
        try:  # ranges and the like, which only the whole config shows
            make_plan(_child(req, setting, None), manager)
        except ConfigError as exc:
            raise ConfigError(f"--grid {_label(setting)}: {exc}") from None
    return base


def _child(req: RunRequest, setting: dict[str, str], seed: int | None, **extra: Any) -> RunRequest:
    seed_override = [("seed", seed)] if seed is not None else []
    return replace(req, overrides=[*req.overrides, *setting.items(), *seed_override], **extra)


def run_sweep(
    req: RunRequest,
    grid: dict[str, list[str]],
    seeds: list[int] | None = None,
    console: Console | None = None,
    workers: int | str = 1,
    executor: Executor | None = None,
) -> SweepResult:
    """A parent run and one child run per grid setting and seed; a failed child does not stop the rest.
    `workers` children (a number or "auto", `runner.runs.placement`) run at once, in processes of their own,
    the CPU cores split between them and, on several GPUs, each on its own.

    Ctrl-C stops the sweep and marks the parent KILLED; what finished is still summarised on it.
    """
    console = console or Console()
    base = check(req, grid, seeds)
    resolved, task = base.resolved, base.task
    primary = base.method_cls.primary_metric
    run_seeds = seeds if seeds is not None else [resolved.settings.seed]
    # Not `hw3-...` as plain runs: `hw3 report` reads those, and tuning runs do not belong in its table.
    experiment = req.experiment or f"sweep-{task.slug}"
    name = f"{req.method}-{task.slug}"
    others = {k: v for k, v in resolved.flat().items() if k not in grid and k != "seed"}
    rec = ParentRecord(req.method, task, run_seeds, grid)
    parent = Parent(
        experiment=experiment,
        run_name=req.run_name or f"{name}-sweep",
        record=rec,
        params=rec.params(others),
    )
    result = SweepResult(
        "",
        experiment,
        req.method,
        task.label,
        primary,
        grid,
        run_seeds,
        [Row(s, len(run_seeds)) for s in settings_of(grid)],
    )
    children, places = [], []
    for row in result.rows:
        for seed in run_seeds:
            run_name = f"{name} {_label(row.setting)} seed{seed}"
            child = _child(req, row.setting, seed, sweep_setting=dict(row.setting), run_name=run_name)
            children.append(Child(RunWork(child), f"{_label(row.setting)} seed {seed}"))
            places.append((row, seed))
    console.print(
        f"[bold]sweep[/] {escape(req.method)} on {task.label}: {len(result.rows)} settings x {len(run_seeds)} seeds = "
        f"{len(children)} runs in experiment {experiment}",
        highlight=False,
    )

    def summarize(out: FanOut) -> Summary | None:
        if not out.finished and not any(r.error for r in out.runs):
            return None
        result.parent_run_id, result.status = out.parent_run_id, out.status
        for row in result.rows:
            row.runs.clear()
            row.failed.clear()
        for run, (row, seed) in zip(out.runs, places, strict=False):
            if run.result is not None:
                row.runs.append((seed, run.result.run_id, run.result.metrics.get(primary)))
            elif run.error is not None:
                row.failed.append((seed, run.error))
        texts = {"sweep.md": markdown(result), "sweep.json": json.dumps(as_json(result), indent=2)}
        return Summary(summary_metrics(result), texts)

    device = resolved.settings.device
    n = resolve_workers(workers, device, len(children))
    out = fan_out(
        children, parent=parent, summarize=summarize, keep_going=True, what="sweep", primary=primary,
        console=console, workers=n, device=device, executor=executor,
    )  # fmt: skip
    result.status = out.status
    return result


def _metric_part(text: str) -> str:
    return re.sub(r"[^\w.\-]", "_", text)  # MLflow metric names allow only these (and / and space)


def metric_prefix(setting: dict[str, str]) -> str:
    """`sweep/lr_0.01__batch_size_64`: one metric group per setting on the parent run."""
    return "sweep/" + "__".join(f"{_metric_part(k)}_{_metric_part(v)}" for k, v in setting.items())


def row_prefix(result: SweepResult, row: Row) -> str:
    prefix = metric_prefix(row.setting)
    if len(prefix) > 200:  # MLflow metric names end at 250 characters; sweep.json maps numbers to settings
        prefix = f"sweep/setting_{result.rows.index(row) + 1}"
    return prefix


def summary_metrics(result: SweepResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in result.rows:
        prefix = row_prefix(result, row)
        if row.mean is not None:
            out[f"{prefix}/{result.primary_metric}/mean"] = row.mean
            out[f"{prefix}/{result.primary_metric}/std"] = row.std or 0.0
        out[f"{prefix}/runs"] = len(row.runs)
    out["sweep/runs_finished"] = sum(len(r.runs) for r in result.rows)
    out["sweep/runs_failed"] = result.failed
    return out


def _cell(result: SweepResult, row: Row) -> str:
    if row.mean is None:
        return "not measured" if row.runs else "-"
    text = fmt_value(result.primary_metric, row.mean)
    return f"{text} ± {fmt_value(result.primary_metric, row.std)}" if len(row.values) > 1 else text


def _runs_cell(row: Row) -> str:
    text = str(len(row.runs)) if len(row.runs) == row.planned else f"{len(row.runs)} of {row.planned}"
    return f"{text} ({len(row.failed)} failed)" if row.failed else text


def _columns(result: SweepResult) -> list[str]:
    return [*result.grid, f"{result.primary_metric} (mean ± std)", "runs"]


def _cells(result: SweepResult, row: Row) -> list[str]:
    return [*row.setting.values(), _cell(result, row), _runs_cell(row)]


def rich_table(result: SweepResult) -> Table:
    seeds = ",".join(map(str, result.seeds))
    table = Table(
        title=f"{result.method} on {result.where}: seeds {seeds} (parent run {result.parent_run_id})",
        title_justify="left",
    )
    for i, name in enumerate(_columns(result)):
        table.add_column(escape(name), justify="right" if i >= len(result.grid) else "left")
    for row in result.rows:
        table.add_row(*map(escape, _cells(result, row)))  # values are text, not rich markup
    return table


def markdown(result: SweepResult) -> str:
    cols = _columns(result)
    lines = [
        f"# Sweep: {result.method} on {result.where}",
        "",
        f"Seeds {', '.join(map(str, result.seeds))}; parent run `{result.parent_run_id}` ({result.status}).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    lines += ["| " + " | ".join(_cells(result, row)) + " |" for row in result.rows]
    return "\n".join(lines) + "\n"


def as_json(result: SweepResult) -> dict[str, Any]:
    return {
        "method": result.method,
        "where": result.where,
        "experiment": result.experiment,
        "parent_run_id": result.parent_run_id,
        "status": result.status,
        "primary_metric": result.primary_metric,
        "grid": result.grid,
        "seeds": result.seeds,
        "settings": [
            {
                "values": row.setting,
                "metric_prefix": row_prefix(result, row),
                "mean": row.mean,
                "std": row.std,
                "runs": [{"seed": s, "run_id": r, "value": v} for s, r, v in row.runs],
                "failed": [{"seed": s, "error": e} for s, e in row.failed],
            }
            for row in result.rows
        ],
    }
