"""The `hw3` command: a thin typer layer. It parses, calls the core, and turns every domain
error into one line on stderr with exit code 1 (130 for an interrupted run)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from runner.commands.options import ExecutorOpt, NoWaitOpt, SlurmOpt, executor_from
from runner.errors import Hw3Error
from runner.runs.placement import WORKERS_HELP

app = typer.Typer(
    name="hw3",
    help="Run GANs and unsupervised domain adaptation on small image benchmarks, tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Piped into a file or `grep`, tables get room for their widest cells rather than 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 200)))
err_console = Console(stderr=True, soft_wrap=True)


Pair = Annotated[
    list[str] | None,
    typer.Option(metavar="SOURCE:TARGET", help="Datasets for adaptation, such as mnist:mnistm (the default)."),
]
DatasetOpt = Annotated[
    list[str] | None, typer.Option(metavar="NAME", help="Dataset for generative methods (default: mnist).")
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps (default: auto).")]


def one(values: list[str] | None, flag: str) -> str | None:
    """The one value of an option that takes one: given twice, it is a mistake to say, not to drop."""
    if values and len(values) > 1:
        raise Hw3Error(f"{flag} is given {len(values)} times ({', '.join(values)}); give it once")
    return values[0] if values else None


def at_least(value: int, low: int, flag: str) -> None:
    if value < low:
        raise Hw3Error(f"{flag} {value}: must be at least {low}")


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Hw3Error as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(code=getattr(exc, "exit_code", 1)) from None

    return wrapper


@app.command("list")
@one_line_errors
def list_() -> None:
    """Methods, datasets, validators, named pairs, presets and suites, and which package brings each."""
    from runner.commands.tables import (
        datasets_table,
        methods_table,
        pairs_table,
        presets_table,
        suites_table,
        validators_table,
    )
    from runner.config import load_registry
    from runner.runs.plugins import get_manager

    manager, registry = get_manager(), load_registry()
    tables = (
        methods_table(manager),
        datasets_table(manager),
        validators_table(manager),
        pairs_table(registry),
        presets_table(registry),
    )
    for table in (*tables, suites_table(registry)):
        console.print(table)


@app.command()
@one_line_errors
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Installed plugins: package, version, hooks, and any error that kept one from loading."""
    import dataclasses

    from runner.commands.tables import plugins_table
    from runner.runs.plugins import get_manager

    manager = get_manager()
    if as_json:
        manager.methods(), manager.datasets()
        typer.echo(json.dumps([dataclasses.asdict(i) for i in manager.infos.values()], indent=2))
    else:
        console.print(plugins_table(manager))


@app.command()
@one_line_errors
def show(
    method: Annotated[str, typer.Argument(help="A method name from `hw3 list`.")],
    pair: Pair = None,
    dataset: DatasetOpt = None,
    preset: Annotated[str | None, typer.Option(help="Apply this preset.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE override; repeatable.")] = None,
) -> None:
    """A method's config keys: type, resolved value, where the value comes from, and what it does."""
    from runner.commands.tables import config_table
    from runner.config import parse_set
    from runner.runs.plan import RunRequest, make_plan
    from runner.runs.plugins import get_manager

    manager = get_manager()
    overrides = parse_set(set_ or [])
    pair_, dataset_ = one(pair, "--pair"), one(dataset, "--dataset")
    planned = make_plan(RunRequest(method, pair=pair_, dataset=dataset_, preset=preset, overrides=overrides), manager)
    resolved, cls = planned.resolved, planned.method_cls
    console.print(f"[bold]{method}[/] ({cls.kind}, from {planned.package}): {cls.description}")
    console.print(f"on {resolved.task.label}")
    defaults = None
    if preset or overrides:
        defaults = make_plan(RunRequest(method, pair=pair_, dataset=dataset_), manager).resolved
    console.print(config_table(cls, resolved, defaults))
    if defaults is not None:
        changed = [k for k, v in resolved.flat().items() if defaults.flat()[k] != v]
        console.print(f"{len(changed)} value(s) differ from the defaults: {', '.join(changed) or 'none'}")


@app.command()
@one_line_errors
def run(
    method: Annotated[str, typer.Argument(help="Method to run, such as baseline (see `hw3 list`).")],
    pair: Pair = None,
    dataset: DatasetOpt = None,
    device: DeviceOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (shorthand for --set epochs=N).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (shorthand for --set seed=N).")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds, such as 0,1,2: a child run each under one parent run.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE config override; repeatable (`hw3 show METHOD` lists keys)."),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="A named preset from registry.toml (`hw3 list`).")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: hw3-SOURCE-TARGET or hw3-DATASET).")
    ] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name (default: METHOD-PAIR-seedN).")] = None,
    data_root: Annotated[
        str | None, typer.Option(help="Folder holding dataset files (default: $HW3_DATA_ROOT or ~/.cache/hw3).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue the MLflow run with this ID from its checkpoint.")
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(help="Data-parallel processes started through torchrun (gloo on the CPU, NCCL on GPUs); one run."),
    ] = 1,
    executor: ExecutorOpt = "local",
    slurm: SlurmOpt = None,
) -> None:
    """Train and evaluate METHOD, logging params, curves, figures and the model to MLflow.

    Examples:

      hw3 run baseline                     # source only, embedded mnist:mnistm

      hw3 run baseline --set train_on=target          # the target-only bound

      hw3 run dann --pair syndigits:mnistm --device cuda

      hw3 run dann --nproc 2         # two processes, gradients averaged

      hw3 run dann --seeds 0,1,2 --executor slurm --slurm partition=gpu --slurm gpus=1
    """
    from runner.config import parse_set
    from runner.distributed import check_gpus, is_main_process, launch, under_launcher, without_option

    at_least(nproc, 1, "--nproc")

    if nproc > 1 and not under_launcher():
        if seeds is not None:
            raise Hw3Error("--nproc runs one run at a time; drop --seeds, or loop over --seed N yourself")
        import torch

        where = device or dict(parse_set(set_ or [])).get("device") or "auto"
        check_gpus(nproc, str(where), torch.cuda.device_count() if torch.cuda.is_available() else 0)
        raise typer.Exit(launch(nproc, without_option(sys.argv[1:], "--nproc")))
    from runner.errors import RunInterrupted
    from runner.progress import fmt_metrics, fmt_value
    from runner.runs.execute import execute
    from runner.runs.plan import RunRequest

    overrides: list[tuple[str, Any]] = [*parse_set(set_ or [])]
    overrides += [(k, v) for k, v in (("epochs", epochs), ("seed", seed), ("device", device)) if v is not None]
    req = RunRequest(
        method,
        pair=one(pair, "--pair"),
        dataset=one(dataset, "--dataset"),
        preset=preset,
        overrides=overrides,
        experiment=experiment,
        run_name=run_name,
        data_root=data_root,
        resume=resume,
    )
    _tidy()
    if seeds is not None:
        return _run_seeds(req, seeds, executor_from(executor, slurm, what="seeds"))
    if executor != "local" or slurm:
        raise Hw3Error("--executor slurm sends many runs to a cluster: give --seeds 0,1,2 (or use hw3 sweep)")
    try:
        result = execute(req, console)
    except RunInterrupted as exc:
        resume_with = f" Resume it with: hw3 run {method} --resume {exc.run_id}" if exc.run_id else ""
        err_console.print(f"[yellow]{escape(str(exc))}; the run is marked KILLED.{resume_with}", highlight=False)
        raise typer.Exit(code=exc.exit_code) from None
    if not is_main_process():
        return  # rank 0 prints the summary for the group
    assert result.plan is not None
    cls = result.plan.method_cls
    primary = cls.primary_metric
    value = result.metrics.get(primary)
    headline = fmt_value(primary, value) if value is not None else "not measured"
    console.print(
        f"\n[bold green]{primary.replace('_', ' ')} {headline}[/] after {result.resolved.settings.epochs} epochs"
    )
    console.print(fmt_metrics(result.metrics), highlight=False)
    summary = {k: result.metrics[k] for k in cls.summary_metrics if "/" in k and k in result.metrics}
    if summary:  # the nested ones fmt_metrics leaves out, such as a GAN's quality/kid
        console.print(fmt_metrics(summary, skip_nested=False), highlight=False)
    console.print(f"run {result.run_id} in experiment {result.experiment} ({result.status})", highlight=False)
    console.print(f"tracking {result.tracking_uri}; checkpoint {result.checkpoint}", highlight=False)
    if result.tracking_uri.startswith("sqlite:"):
        console.print(
            f"see it: mlflow ui --backend-store-uri {result.tracking_uri}  (then open {result.link})",
            highlight=False,
        )
    elif result.link:
        console.print(f"see it: {result.link}", highlight=False)


@app.command()
@one_line_errors
def report(
    protocol: Annotated[
        str,
        typer.Option(
            help="Epoch selection: last, or the best epoch by a validator (`hw3 list` shows them; oracle uses "
            "target labels: an upper bound)."
        ),
    ] = "last",
    pair: Annotated[list[str] | None, typer.Option(help="Only these SOURCE:TARGET pairs; repeatable.")] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", metavar="KEY=VALUE", help="Only runs whose param KEY is VALUE; repeatable."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.md and the t-SNE figures.")] = Path("hw3-report"),
    tune: Annotated[
        str | None,
        typer.Option(metavar="PARENT_RUN_ID", help="Instead: the reality check of a hw3 tune (its parent run ID)."),
    ] = None,
) -> None:
    """The report's table from MLflow: source only, DANN, ADDA, ..., target only, one column per pair.

    Runs of one method and pair whose settings differ are never averaged together: the row splits,
    each part labelled with the settings that differ (choose one with --filter KEY=VALUE)."""
    from runner.commands.report import build, rich_table, write
    from runner.config import parse_set

    if tune is not None:
        return _tune_report(tune, out)

    filters = [(k, str(v)) for k, v in parse_set(filter_ or [])]
    rep = build(protocol, pair, filters=filters)
    console.print(rich_table(rep))
    path = write(rep, out)
    console.print(f"wrote {path} (runs behind each cell are listed there)", highlight=False)


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
    _tidy()
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
def tsne(
    run_id: Annotated[str, typer.Argument(help="A finished adaptation run (MLflow run ID).")],
    points: Annotated[int, typer.Option(help="Source + target test points (at least 10).")] = 2000,
    data_root: Annotated[str | None, typer.Option(help="Folder holding dataset files, if the run used one.")] = None,
) -> None:
    """t-SNE of a finished run's features, by class and by domain, logged to the run as figures."""
    from runner.commands.tsne import tsne_for_run

    at_least(points, 10, "--points")

    paths = tsne_for_run(run_id, points, data_root)
    console.print("logged " + ", ".join(paths) + f" to run {run_id}", highlight=False)


@app.command()
@one_line_errors
def sample(
    run_id: Annotated[str, typer.Argument(help="A finished gan or acgan run (MLflow run ID).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 64,
    label: Annotated[
        str | None, typer.Option(help="Conditional runs: the label to draw, by index or name (such as 3 or Smiling).")
    ] = None,
    out: Annotated[str, typer.Option(help="Picture to write (.png or .jpg).")] = "samples.png",
    seed: Annotated[int, typer.Option(help="Seed of the noise vectors.")] = 0,
) -> None:
    """Draw images from a finished run's logged generator into one grid picture.

    Examples:

      hw3 sample RUN_ID --n 64 --out grid.png

      hw3 sample RUN_ID --label 7 --out sevens.png     # an acgan run
    """
    from runner.commands.sample import sample_run

    path = sample_run(run_id, n, out, label, seed)
    console.print(f"wrote {n} samples from run {run_id} to {path}", highlight=False)


data_app = typer.Typer(help="Datasets: where they come from, what is in them, and their cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
DataRoot = Annotated[
    str | None, typer.Option(help="Folder holding dataset files (default: $HW3_DATA_ROOT or ~/.cache/hw3).")
]


@data_app.command("list")
@one_line_errors
def data_list(data_root: DataRoot = None) -> None:
    """Every dataset: where it would be read from, whether it is available offline, and cached."""
    from runner.commands.tables import datasets_table
    from runner.runs.plugins import get_manager

    console.print(datasets_table(get_manager(), data_root, cache=True))


@data_app.command("check")
@one_line_errors
def data_check(
    name: Annotated[str, typer.Argument(help="Dataset name (see `hw3 data list`) or a folder path.")],
    data_root: DataRoot = None,
) -> None:
    """Read every file of a dataset and report counts per split and class, sizes and all problems."""
    from rich.table import Table

    from runner.commands.data import check

    report = check(name, data_root, err_console)
    console.print(f"[bold]{name}[/]: {report.origin}  (data root {report.root})", highlight=False)
    if report.splits:
        t = Table(title_justify="left")
        t.add_column("split")
        t.add_column("images", justify="right")
        t.add_column("image shape (C, H, W)")
        t.add_column("per class")
        for split, r in report.splits.items():
            per = ", ".join(f"{k}: {v}" for k, v in r.per_class.items())
            t.add_row(split, str(r.images), str(r.shape), per)
        console.print(t)
    for problem in report.problems:
        err_console.print(f"[red]problem:[/] {escape(problem)}", highlight=False)
    if report.problems:
        raise Hw3Error(f"{len(report.problems)} problem(s) in dataset '{name}'")
    console.print("[green]no problems found")


@data_app.command("prepare")
@one_line_errors
def data_prepare(
    name: Annotated[str, typer.Argument(help="Dataset name (see `hw3 data list`).")],
    data_root: DataRoot = None,
    download: Annotated[bool, typer.Option(help="Download the dataset's files first (needs a network).")] = False,
) -> None:
    """Decode a dataset once into the tensor cache that runs read (downloading it first if asked)."""
    from runner.commands.data import prepare

    path, splits = prepare(name, data_root, download, console)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    console.print(f"{name}: {sizes} images cached in {path}", highlight=False)


@data_app.command("show")
@one_line_errors
def data_show(
    name: Annotated[str, typer.Argument(help="Dataset name (see `hw3 data list`) or a folder path.")],
    out: Annotated[Path | None, typer.Option(help="PNG file to write (default: NAME.png).")] = None,
    per_class: Annotated[int, typer.Option(help="Images per class (one row per class), at least 1.")] = 12,
    data_root: DataRoot = None,
) -> None:
    """Write a PNG grid of training samples, one row per class."""
    from runner.commands.data import show

    at_least(per_class, 1, "--per-class")

    path = show(name, data_root, out or Path(f"{name.strip('/').replace('/', '_')}.png"), per_class, console)
    console.print(f"wrote {path}", highlight=False)


new_app = typer.Typer(help="Start something new from a template.", no_args_is_help=True)
app.add_typer(new_app, name="new")


@new_app.command("plugin")
@one_line_errors
def new_plugin(
    name: Annotated[str, typer.Argument(help="Plugin and method name, such as my-method.")],
    dir_: Annotated[Path, typer.Option("--dir", help="Folder to write the package folder NAME in.")] = Path("."),
) -> None:
    """Write a plugin package: pyproject.toml with the hw3 entry point, a working method, and tests.

    Examples:

      hw3 new plugin my-method && pip install ./my-method && pytest my-method
    """
    from runner.commands.scaffold import new_plugin as write

    path = write(name, dir_)
    shown = path if path.is_absolute() else f"./{path}"  # so pip reads a path, not a package name
    console.print(f"wrote {shown}: method '{name}' in package hw3-{name.replace('_', '-')}", highlight=False)
    console.print(f"next: pip install {shown} && pytest {shown}", highlight=False)


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
    _tidy()
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
    _tidy()
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


def _tune_report(parent_run_id: str, out: Path) -> None:
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


def _tidy() -> None:
    """Once per command that starts runs: a run whose process died is marked KILLED (and said so)."""
    from runner.store import reap_orphans

    reap_orphans(console=console)


def _run_seeds(req: Any, seeds: str, executor: Any = None) -> None:
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


def main() -> None:
    """Console-script entry point: load plugins, add their commands, run."""
    from runner.runs.plugins import get_manager, warn_problems

    try:
        manager = get_manager()
        manager.add_commands(app)
        if sys.argv[1:2] != ["plugins"]:
            warn_problems(manager)
    except Hw3Error as exc:  # HW3_STRICT_PLUGINS=1 turns load warnings into this
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    try:
        app()
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(0)


def _exit_now(code: object) -> None:
    """End the process without tearing down every module it imported: after a run, Python's own
    shutdown of torch, MLflow and scikit-learn took 2 s of an idle machine (and far more of a busy
    one). The exit handlers still run and the output is flushed; only when a thread is still
    working does the process exit the ordinary way, which waits for it."""
    import atexit
    import os
    import threading

    status = code if isinstance(code, int) else (0 if code is None else 1)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_handlers is None:  # not CPython: the ordinary exit
        sys.exit(status)
    run_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
