"""Options several commands share, with their help: where many runs go (`--executor`, `--slurm`,
`--no-wait`) and what they become."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from runner.errors import ConfigError, choices_hint

EXECUTORS = ("local", "slurm")

ExecutorOpt = Annotated[
    str,
    typer.Option(
        metavar="local|slurm",
        help="Where the runs go: local (processes on this machine, --workers at once) or slurm (one Slurm job array "
        "through submitit, a task per run; --slurm sets its sbatch options).",
    ),
]
SlurmOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--slurm",
        metavar="KEY=VALUE",
        help="An sbatch option of each task, repeatable: partition, time (minutes or [D-]HH:MM:SS; default 60), "
        "cpus (default 2; the run's threads), gpus, mem (8G), account, qos, sbatch (any other, such as "
        "sbatch=--constraint=a100), logs (a folder the nodes can write; default slurm-logs), limit (tasks at once).",
    ),
]
NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait", help="With --executor slurm: submit and return; run the same command later to collect the runs."
    ),
]


def executor_from(name: str, slurm: list[str] | None, *, wait: bool = True, what: str = "") -> Any:
    """None for the local pool, or the SlurmExecutor the options describe (the cluster checked
    now, before any run is planned or submitted)."""
    name = name.strip().lower()
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name}: not an executor{choices_hint(name, EXECUTORS)}")
    if name == "local":
        if slurm:
            raise ConfigError("--slurm sets a Slurm task's options; add --executor slurm")
        if not wait:
            raise ConfigError("--no-wait submits to Slurm and returns; add --executor slurm")
        return None
    from runner.runs.slurm import SlurmExecutor, SlurmOptions, check_cluster
    from runner.store import tracking_uri

    options = SlurmOptions.parse(slurm or [], wait=wait)
    if what:
        options.name = f"hw3-{what}"
    uri = tracking_uri()
    check_cluster(options, uri)
    return SlurmExecutor(options, uri)
