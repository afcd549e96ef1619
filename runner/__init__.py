"""hw3: a plugin-based experiment runner for GANs and domain adaptation.

The names plugin authors use are exported here; the rest of the package is internal.
Importing this module stays cheap (no torch, no mlflow) so `hw3 list` starts fast: the names
that need torch (`RunContext`, `Batch`, `AdaptMethod`) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runner.data import DataContext, DatasetSpec, Split
from runner.errors import DataError, Hw3Error
from runner.hookspecs import hookimpl
from runner.method import Method, option

if TYPE_CHECKING:
    from runner.adapt import AdaptMethod
    from runner.engine import Batch, RunContext

__version__ = "0.1.0"
# Bumped when the plugin contract (hooks, Method, DatasetSpec, RunContext, runner.adapt, runner.testing)
# changes incompatibly.
# A plugin states the version it was written for as a module attribute `HW3_API = "1"`.
PLUGIN_API_VERSION = "1"

# Exported names whose modules import torch: loaded by `__getattr__` when first asked for.
_LAZY = {"RunContext": "runner.engine", "Batch": "runner.engine", "AdaptMethod": "runner.adapt"}

__all__ = [
    "PLUGIN_API_VERSION",
    "AdaptMethod",
    "Batch",
    "DataContext",
    "DataError",
    "DatasetSpec",
    "Hw3Error",
    "Method",
    "RunContext",
    "Split",
    "__version__",
    "hookimpl",
    "option",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
