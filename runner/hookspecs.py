"""The contract between hw3 and its plugins (pluggy project name "hw3").

Registration hooks receive a `register` callable, in the style of llm and datasette: a plugin
calls it once per object it contributes. Lifecycle hooks let trackers and callbacks follow a run.

Every hook is called through pluggy, so its options mean what pluggy documents:

- Implementations run newest-registered first: third-party plugins (loaded after the
  built-ins, in package-name order) before the built-ins. `tryfirst=True` moves an
  implementation to the front, `trylast=True` to the back.
- `wrapper=True` (a generator that yields once) runs around all the others: its code before
  `yield` first, after `yield` last, and it sees their result or exception. So with a plain
  implementation A, a `tryfirst` B and a wrapper W: W before its yield, B, A, W after it.
- `hw3_resolve_dataset` is `firstresult`: the first implementation to return a spec wins.
- Names registered through `register` are unique whatever the calling order: the plugin
  loaded first keeps a name, and a later one that repeats it gets an error naming both.

An exception in a hook is pinned on the plugin whose function raised it (and its package).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from runner.context import RunContext
    from runner.datasets import DatasetSpec, DatasetTables
    from runner.method import Method
    from runner.validator import Validator

hookspec = pluggy.HookspecMarker("hw3")
hookimpl = pluggy.HookimplMarker("hw3")

# Bumped when the plugin contract (hooks, Method, DatasetSpec, RunContext, runner.adapt, runner.testing)
# changes incompatibly. A plugin states the version it was written for as `HW3_API = "1"`.
PLUGIN_API_VERSION = "1"


@hookspec
def hw3_register_methods(register: Callable[[type[Method[Any]]], None]) -> None:
    """Register method classes: call ``register(MyMethod)`` for each subclass of `runner.Method`."""


@hookspec
def hw3_register_datasets(register: Callable[[DatasetSpec], None], registry: DatasetTables) -> None:
    """Register datasets: call ``register(DatasetSpec(...))`` for each dataset. `registry` holds
    the user's `[datasets.NAME]` tables of registry.toml (`registry.datasets`, read from
    `registry.path`); a plugin that defines datasets there (as `folder` does) reads them here.
    An implementation may leave the argument out."""


@hookspec
def hw3_register_validators(register: Callable[[Validator], None]) -> None:
    """Register validators: call ``register(MyValidator())`` with an instance of each subclass of
    `runner.Validator`. Every adaptation run logs each one's score as `validator/<name>` per epoch
    and the epoch it picks as `selected/<name>/...`; `hw3 tune --select <name>` searches with it."""


@hookspec(firstresult=True)
def hw3_resolve_dataset(name: str) -> DatasetSpec | None:
    """Make a `DatasetSpec` for a name no plugin registered (such as a folder path), or None."""


@hookspec
def hw3_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the `hw3` typer app (``@app.command()``); never a click object."""


@hookspec
def hw3_run_start(run: RunContext) -> None:
    """A run is set up and about to train: `run` holds its config, device, data and run_id."""


@hookspec
def hw3_epoch_end(run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
    """An epoch finished and was evaluated; `metrics` holds its train and eval figures."""


@hookspec
def hw3_run_end(run: RunContext, status: str, metrics: dict[str, float]) -> None:
    """A run ended with `status` FINISHED, KILLED or FAILED and its last metrics."""
