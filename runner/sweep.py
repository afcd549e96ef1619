"""`hw3 sweep`: every combination of some config values (times seeds) as child runs of one parent run.

Everything is checked before the first run starts: each grid key and value goes through the same
config resolution as `hw3 run --set`, so a typo costs a second, not a half-finished sweep. The
parent run ends with the method's primary metric per setting (mean and std over seeds) as
metrics and as `sweep.md`/`sweep.json`.
"""

from __future__ import annotations

import itertools
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.config import ResolvedConfig, coerce, config_fields
from runner.errors import ConfigError, RunFailed, RunInterrupted
from runner.plugins import choices_hint, get_manager
from runner.run import RunRequest, RunResult, execute, plan

SWEEP_TAG = "hw3.sweep"  # "true" on the parent
CHILD_TAG = "hw3.sweep.child"  # "true" on each child, beside one `hw3.grid.KEY` tag per grid key


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


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: write whole numbers separated by commas, such as 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, such as 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


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
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        vals = self.values
        return (statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None


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


def check(req: RunRequest, grid: dict[str, list[str]], seeds: list[int] | None) -> ResolvedConfig:
    """Check the whole sweep as `hw3 run` checks one run, before anything starts; the base config."""
    manager = get_manager()
    if req.resume:
        raise ConfigError("hw3 sweep starts new runs; resume a child run on its own with hw3 run --resume RUN_ID")
    given = {k for k, _ in req.overrides}
    if seeds is not None and "seed" in given:
        raise ConfigError("give either --set seed=N or --seeds, not both")
    base = plan(req, manager)
    method_cls = manager.method(req.method)
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
            plan(_child(req, setting, None), manager)
        except ConfigError as exc:
            raise ConfigError(f"--grid {_label(setting)}: {exc}") from None
    return base


def _child(req: RunRequest, setting: dict[str, str], seed: int | None, **extra: Any) -> RunRequest:
    seed_override = [("seed", seed)] if seed is not None else []
    fields = {**req.__dict__, "overrides": [*req.overrides, *setting.items(), *seed_override], **extra}
    return RunRequest(**fields)


def run_sweep(
    req: RunRequest, grid: dict[str, list[str]], seeds: list[int] | None = None, console: Console | None = None
) -> SweepResult:
    """A parent run and one child run per grid setting and seed; a failed child does not stop the rest.

    Ctrl-C stops the sweep and marks the parent KILLED; what finished is still summarised on it.
    """
    from runner import tracking

    console = console or Console()
    resolved = check(req, grid, seeds)
    primary = get_manager().method(req.method).primary_metric
    where = {"pair": resolved.pair} if resolved.pair else {"dataset": resolved.dataset}
    where_text = resolved.pair or resolved.dataset or ""
    run_seeds = seeds if seeds is not None else [resolved.settings.seed]
    settings = settings_of(grid)
    tracker = tracking.Tracker()  # an unreachable server stops here, before any run
    # Not `hw3-...` as plain runs: `hw3 report` reads those, and tuning runs do not belong in its table.
    experiment = req.experiment or f"sweep-{where_text.replace(':', '-')}"
    name = f"{req.method}-{where_text.replace(':', '-')}"
    parent = tracker.start(
        experiment,
        req.run_name or f"{name}-sweep",
        {
            "method": req.method,
            **where,
            SWEEP_TAG: "true",
            "hw3.parent": "true",  # `hw3 report` skips parents
            "hw3.grid": "; ".join(f"{k}={','.join(v)}" for k, v in grid.items()),
            "hw3.seeds": ",".join(map(str, run_seeds)),
            **tracking.version_tags(),
        },
    )
    others = {k: v for k, v in resolved.flat().items() if k not in grid and k != "seed"}
    grid_params = {f"grid.{k}": ",".join(v) for k, v in grid.items()}
    tracker.log_params({"method": req.method, **where, **grid_params, "seeds": ",".join(map(str, run_seeds)), **others})
    result = SweepResult(
        parent, experiment, req.method, where_text, primary, grid, run_seeds, [Row(s, len(run_seeds)) for s in settings]
    )
    total = len(settings) * len(run_seeds)
    console.print(
        f"[bold]sweep[/] {escape(req.method)} on {where_text}: {len(settings)} settings x {len(run_seeds)} seeds = "
        f"{total} runs under parent run {parent} in experiment {experiment}",
        highlight=False,
    )
    status = "FAILED"
    try:
        done = 0
        for row in result.rows:
            for seed in run_seeds:
                done += 1
                what = escape(_label(row.setting))
                console.print(f"[bold]{what} seed {seed}[/] ({done} of {total})", highlight=False)
                child = _child(
                    req,
                    row.setting,
                    seed,
                    tags={CHILD_TAG: "true", **{f"hw3.grid.{k}": v for k, v in row.setting.items()}},
                    parent_run_id=parent,
                    experiment=experiment,  # MLflow nests runs only within one experiment
                    run_name=f"{name} {_label(row.setting)} seed{seed}",
                )
                try:
                    run: RunResult = execute(child, console)
                except RunFailed as exc:  # one bad setting (a diverging lr) should not end the sweep
                    console.print(f"[red]failed:[/] {escape(str(exc))}", highlight=False)
                    row.failed.append((seed, str(exc)))
                    continue
                row.runs.append((seed, run.run_id, run.metrics.get(primary)))
        status = "FINISHED" if any(r.runs for r in result.rows) else "FAILED"
    except (RunInterrupted, KeyboardInterrupt) as exc:
        status = "KILLED"
        finished = sum(len(r.runs) for r in result.rows)
        why = f"{exc}; " if str(exc) else ""  # the child's own message names its checkpoint
        raise RunInterrupted(
            f"{why}the sweep stopped after {finished} of {total} runs; parent run {parent} is marked KILLED"
        ) from None
    finally:
        result.status = status
        try:
            if any(r.runs or r.failed for r in result.rows):
                tracker.log_metrics(summary_metrics(result), sum(len(r.runs) for r in result.rows))
                tracker.log_text(markdown(result), "sweep.md")
                tracker.log_dict(as_json(result), "sweep.json")
        finally:
            tracker.end(status)
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


def _fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if metric.endswith("acc") else f"{value:.4g}"


def _cell(result: SweepResult, row: Row) -> str:
    if row.mean is None:
        return "not measured" if row.runs else "-"
    text = _fmt_value(result.primary_metric, row.mean)
    return f"{text} ± {_fmt_value(result.primary_metric, row.std)}" if len(row.values) > 1 else text


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
