"""The contract between hw3 and its plugins (pluggy project name "hw3").

Registration hooks receive a `register` callable, in the style of llm and datasette: a plugin
calls it once per object it contributes. Lifecycle hooks let trackers and callbacks follow a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("hw3")
hookimpl = pluggy.HookimplMarker("hw3")


@hookspec
def hw3_register_methods(register: Callable[[type], None]) -> None:
    """Register method classes: call ``register(MyMethod)`` for each subclass of `runner.Method`."""


@hookspec
def hw3_register_datasets(register: Callable[[Any], None]) -> None:
    """Register datasets: call ``register(DatasetSpec(...))`` for each dataset."""


@hookspec(firstresult=True)
def hw3_resolve_dataset(name: str) -> Any:
    """Make a `DatasetSpec` for a name no plugin registered (such as a folder path), or None."""


@hookspec
def hw3_register_commands(app: Any) -> None:
    """Add subcommands to the `hw3` typer app (``@app.command()``); never a click object."""


@hookspec
def hw3_run_start(run: Any) -> None:
    """A run is about to train. `run` is the `RunContext` (config, device, data, run_id)."""


@hookspec
def hw3_epoch_end(run: Any, epoch: int, metrics: dict[str, float]) -> None:
    """An epoch finished and was evaluated; `metrics` holds its train and eval figures."""


@hookspec
def hw3_run_end(run: Any, status: str, metrics: dict[str, float]) -> None:
    """A run ended with `status` FINISHED, KILLED or FAILED and its last metrics."""
