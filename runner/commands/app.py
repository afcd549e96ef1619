"""What every `hw3` command shares: the typer app, the consoles, the common options, and the
wrapper that turns a domain error into one line on stderr with its exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from runner.errors import Hw3Error

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


def tidy() -> None:
    """Once per command that starts runs: a run whose process died is marked KILLED (and said so)."""
    from runner.store import reap_orphans

    reap_orphans(console=console)
