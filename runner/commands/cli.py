"""The `hw3` command: a thin typer layer. It parses, calls the core, and turns every domain
error into one line on stderr with exit code 1 (130 for an interrupted run). The commands that
start many runs live in `runner.commands.many`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from runner.commands.app import (
    DatasetOpt,
    DeviceOpt,
    Pair,
    app,
    at_least,
    console,
    err_console,
    one,
    one_line_errors,
    tidy,
)
from runner.commands.options import ExecutorOpt, SlurmOpt, executor_from
from runner.errors import Hw3Error


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
    from runner.distributed import is_main_process, under_launcher

    at_least(nproc, 1, "--nproc")

    if nproc > 1 and not under_launcher():
        if seeds is not None:
            raise Hw3Error("--nproc runs one run at a time; drop --seeds, or loop over --seed N yourself")
        _launch(nproc, device or dict(parse_set(set_ or [])).get("device") or "auto")
    from runner.errors import RunInterrupted
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
    tidy()
    if seeds is not None:
        from runner.commands.many import run_seeds_table

        return run_seeds_table(req, seeds, executor_from(executor, slurm, what="seeds"))
    if executor != "local" or slurm:
        raise Hw3Error("--executor slurm sends many runs to a cluster: give --seeds 0,1,2 (or use hw3 sweep)")
    try:
        result = execute(req, console)
    except RunInterrupted as exc:
        resume_with = f" Resume it with: hw3 run {method} --resume {exc.run_id}" if exc.run_id else ""
        err_console.print(f"[yellow]{escape(str(exc))}; the run is marked KILLED.{resume_with}", highlight=False)
        raise typer.Exit(code=exc.exit_code) from None
    if is_main_process():  # rank 0 prints the summary for the group
        _print_result(result)


def _launch(nproc: int, device: str) -> None:
    """This same command again in `nproc` processes under torchrun (its exit code is ours)."""
    import torch

    from runner.distributed import check_gpus, launch, without_option

    check_gpus(nproc, str(device), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    raise typer.Exit(launch(nproc, without_option(sys.argv[1:], "--nproc")))


def _print_result(result: Any) -> None:
    """A finished run in a few lines: its headline, every metric, where it is and how to see it."""
    from runner.progress import fmt_metrics, fmt_value

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
    if result.run_link:  # in the training view: a plain link opens MLflow 3.18's GenAI one for a new browser
        console.print(f"this run: {result.run_link}", highlight=False)


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
        from runner.commands.many import tune_report

        return tune_report(tune, out)

    filters = [(k, str(v)) for k, v in parse_set(filter_ or [])]
    rep = build(protocol, pair, filters=filters)
    console.print(rich_table(rep))
    path = write(rep, out)
    console.print(f"wrote {path} (runs behind each cell are listed there)", highlight=False)


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


# Registered here, so `hw3 --help` lists them after the one-run commands, before data and new.
from runner.commands import many  # noqa: E402, F401

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
