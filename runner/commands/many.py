"""The commands that start many runs: `hw3 reproduce` (a suite), `hw3 sweep` (a grid) and
`hw3 tune` (a search), and the table `hw3 run --seeds` prints. Each parses its options and
hands the runs to `runner.runs` (one parent, one pool, one stop policy for all of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from runner.commands.app import DatasetOpt, DeviceOpt, Pair, app, console, err_console, one, one_line_errors, tidy
from runner.commands.options import ExecutorOpt, NoWaitOpt, SlurmOpt, executor_from
from runner.errors import Hw3Error
from runner.runs.placement import WORKERS_HELP


@app.command()
@one_line_errors
def reproduce(
    suite: Annotated[str, typer.Argument(help="A suite from registry.toml (`hw3 list` shows them).")] = "report",
    data_root: Annotated[
        str | None, typer.Option(help="Folder holding dataset files (default: embedded data where there is some).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: reports/SUITE).")] = None,
    preset: Annotated[str | None, typer.Option(help="A preset applied to every run, such as quick.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE for every run of the suite; repeatable.")
    ] = None,
    device: DeviceOpt = None,
    workers: Annotated[
        str, typer.Option(metavar="N|auto", help=WORKERS_HELP + " 1 (the default): one run after another.")
    ] = "1",
    executor: ExecutorOpt = "local",
    slurm: SlurmOpt = None,
    no_wait: NoWaitOpt = False,
) -> None:
    """Every run of a suite (by default the whole course report), then one report folder.

    Run it again after an interruption: finished runs are reused, an interrupted one resumes
    from its checkpoint, and only what is missing runs.

    Examples:

      hw3 reproduce                            # the report on embedded data

      hw3 reproduce course --data-root ~/hw3-data    # the course's own data

      hw3 reproduce --device cuda --workers auto     # 4 runs at once per GPU
    """
    from runner.commands.reproduce import reproduce as run_suite
    from runner.config import parse_set
    from runner.runs.placement import parse_workers
    from runner.runs.slurm import Submitted

    how_many = parse_workers(workers)
    where = executor_from(executor, slurm, wait=not no_wait, what=suite)
    tidy()
    try:
        page, outcomes = run_suite(
            suite, preset, parse_set(set_ or []), data_root, out, console, device=device, workers=how_many,
            executor=where,
        )  # fmt: skip
    except Submitted as exc:
        console.print(str(exc), highlight=False)
        return
    failed = [o for o in outcomes if o.status == "FAILED"]
    console.print(f"\nwrote {page} and {page.with_suffix('.md')}", highlight=False)
    if failed:
        raise Hw3Error(f"{len(failed)} run(s) failed ({', '.join(o.item.key for o in failed)}); run again to retry")


@app.command()
@one_line_errors
def sweep(
    method: Annotated[str, typer.Argument(help="Method to sweep, such as dann (see `hw3 list`).")],
    grid: Annotated[
        list[str],
        typer.Option(
            metavar="KEY=V1,V2",
            help="KEY=V1,V2,... config values to try; repeat for more keys (every combination runs). "
            "`hw3 show METHOD` lists the keys.",
        ),
    ],
    pair: Pair = None,
    dataset: DatasetOpt = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds, such as 0,1,2: each setting runs once per seed.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE override for every run; repeatable.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="A named preset from registry.toml (`hw3 list`).")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: sweep-SOURCE-TARGET or sweep-DATASET).")
    ] = None,
    data_root: Annotated[
        str | None, typer.Option(help="Folder holding dataset files (default: $HW3_DATA_ROOT or ~/.cache/hw3).")
    ] = None,
    device: DeviceOpt = None,
    workers: Annotated[
        str, typer.Option(metavar="N|auto", help=WORKERS_HELP + " Only installed plugins' methods run this way.")
    ] = "1",
    executor: ExecutorOpt = "local",
    slurm: SlurmOpt = None,
) -> None:
    """Run METHOD for every combination of --grid values (and every seed) as child runs of one
    MLflow parent run, then print the primary metric per setting (mean ± std over seeds).

    Every key and value is checked before the first run starts, as `hw3 run --set` checks them.

    A failed run does not stop the others (the command then exits 1); Ctrl-C marks the parent KILLED.

    Examples:

      hw3 sweep dann --grid lr=0.001,0.01 --seeds 0,1,2        # 6 runs

      hw3 sweep baseline --grid lr=0.001,0.01 --grid batch_size=32,64

      hw3 sweep dann --grid lr=0.001,0.01 --workers 4    # 4 at once

      hw3 sweep dann --grid lr=0.001,0.01 --seeds 0,1,2 --device cuda --workers auto
    """
    from runner.commands.sweep import parse_grid, rich_table, run_sweep
    from runner.config import parse_set
    from runner.runs.execute import RunRequest
    from runner.runs.parent import parse_seeds
    from runner.runs.placement import parse_workers

    how_many = parse_workers(workers)

    req = RunRequest(
        method,
        pair=one(pair, "--pair"),
        dataset=one(dataset, "--dataset"),
        preset=preset,
        overrides=parse_set(set_ or []) + ([("device", device)] if device else []),
        experiment=experiment,
        data_root=data_root,
    )
    values = parse_grid(grid)
    where = executor_from(executor, slurm, what="sweep")
    tidy()
    picked = parse_seeds(seeds) if seeds is not None else None
    result = run_sweep(req, values, picked, console, workers=how_many, executor=where)
    console.print(rich_table(result))
    console.print(f"parent run {result.parent_run_id} in experiment {result.experiment}", highlight=False)
    if result.failed:
        runs = sum(r.planned for r in result.rows)
        raise Hw3Error(f"{result.failed} of {runs} runs failed (their errors are above and in sweep.json)")


@app.command()
@one_line_errors
def tune(
    method: Annotated[str, typer.Argument(help="Adaptation method to tune, such as dann (see `hw3 list`).")],
    space: Annotated[
        list[str],
        typer.Option(
            metavar="KEY=LOW..HIGH[:log] | KEY=A,B",
            help="A config key's range (uniform, or :log) or choices; repeat for more keys (`hw3 show METHOD`).",
        ),
    ],
    pair: Pair = None,
    trials: Annotated[
        int, typer.Option(help="Trials the study runs in all (finished or pruned), workers together.")
    ] = 20,
    select: Annotated[
        str,
        typer.Option(
            help="The validator that scores trials, without target labels (`hw3 list` shows them; oracle reads "
            "target labels: a bound). A study-level one (ensv) scores each trial against the ensemble of the trials "
            "finished so far and itself, and never prunes; the reality check at the end scores every trial "
            "against all of them again, and that table is the choice."
        ),
    ] = "im",
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds each trial averages over.")] = None,
    workers: Annotated[str, typer.Option(metavar="N|auto", help=WORKERS_HELP + " Each takes the next trial.")] = "1",
    storage: Annotated[
        str | None,
        typer.Option(
            help="The study's database: sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB for workers on several "
            "machines (default: optuna.db beside mlflow.db)."
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: from the method, pair, space, validator and seeds).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE for every trial; repeatable.")] = None,
    preset: Annotated[str | None, typer.Option(help="A named preset from registry.toml (`hw3 list`).")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: tune-SOURCE-TARGET).")] = None,
    data_root: Annotated[
        str | None, typer.Option(help="Folder holding dataset files (default: $HW3_DATA_ROOT or ~/.cache/hw3).")
    ] = None,
    device: DeviceOpt = None,
    executor: Annotated[
        str,
        typer.Option(
            metavar="local|slurm",
            help="Where the workers go: local (processes here) or slurm (--workers Slurm tasks joining the study; "
            "give --storage a PostgreSQL database, or keep the MLflow store and study on a shared filesystem).",
        ),
    ] = "local",
    slurm: SlurmOpt = None,
) -> None:
    """Search METHOD's settings on Optuna (TPE; trials whose validator score lags are pruned), choose
    by a validator that needs no target labels, and print the reality check: each validator's
    choice against the oracle's (best target validation accuracy), the defaults, and Spearman's rho.

    Each trial's runs are MLflow child runs of one parent run, which holds the reality check
    (tune.md, a scatter per validator). Run the same command again after Ctrl-C to resume; run it
    on other machines with the same --storage postgresql://... to share the study.

    Examples:

      hw3 tune dann --space lr=1e-4..1e-2:log --space dropout=0..0.7 --trials 24 --select im --workers 2

      hw3 tune adda --pair mnistm:syndigits --space lr_target=2e-5..2e-3:log --trials 12

      hw3 tune dann --space lr=1e-4..1e-2:log --storage postgresql://hw3:secret@db/hw3   # on each machine
    """
    from runner.runs.execute import RunRequest
    from runner.runs.parent import parse_seeds
    from runner.runs.placement import parse_workers
    from runner.runs.tune.tuner import tune as run_tune

    how_many = parse_workers(workers)
    from runner.config import parse_set
    from runner.errors import RunInterrupted

    req = RunRequest(
        method,
        pair=one(pair, "--pair"),
        preset=preset,
        overrides=parse_set(set_ or []) + ([("device", device)] if device else []),
        experiment=experiment,
        data_root=data_root,
    )
    picked = parse_seeds(seeds) if seeds is not None else None
    where = executor_from(executor, slurm, what="tune")
    tidy()
    try:
        result = run_tune(
            req, space, trials=trials, select=select, seeds=picked, workers=how_many, storage=storage, study=study,
            console=console, executor=where,
        )  # fmt: skip
    except RunInterrupted as exc:
        err_console.print(f"[yellow]{escape(str(exc))}", highlight=False)
        raise typer.Exit(code=exc.exit_code) from None
    console.print(
        f"study {result.study}; parent run {result.parent_run_id} (tune.md and a scatter per validator are on it)",
        highlight=False,
    )


def tune_report(parent_run_id: str, out: Path) -> None:
    from runner.runs.tune import reality, views
    from runner.store import reader

    rc = reality.build(reader(), parent_run_id)
    console.print(views.rich_table(rc))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tune.md"
    path.write_text(views.markdown(rc))
    for name, fig in views.figures(rc).items():
        fig.savefig(out / name, dpi=110)
    console.print(f"wrote {path} and a scatter per validator beside it", highlight=False)


def run_seeds_table(req: Any, seeds: str, executor: Any = None) -> None:
    from rich.table import Table

    from runner.progress import fmt_value
    from runner.runs.parent import parse_seeds, run_seeds

    values = parse_seeds(seeds)
    result = run_seeds(req, values, console, executor=executor)
    shown = [k for k in result.keys if not k.startswith("selected/")]
    t = Table(title=f"{req.method}: {len(values)} seeds (parent run {result.parent_run_id})", title_justify="left")
    for col in ("seed", "run", *shown):
        t.add_column(col.replace("_", " "))
    for seed, child in zip(values, result.children, strict=True):
        t.add_row(str(seed), child.run_id, *(fmt_value(k, child.metrics.get(k)) for k in shown))
    console.print(t)
    primary = result.keys[0]
    mean, std = result.summary.get(f"{primary}/mean"), result.summary.get(f"{primary}/std")
    if mean is not None:
        console.print(
            f"[bold green]{primary.replace('_', ' ')} {fmt_value(primary, mean)} ± {fmt_value(primary, std)}[/] "
            f"(mean ± std over seeds {seeds})",
            highlight=False,
        )
