"""hw3: a plugin-based experiment runner for GANs and domain adaptation.

This module only re-exports the names plugin authors use; the rest of the package is internal.
Importing it stays cheap (no torch, no mlflow) so `hw3 list` starts fast: the names that need
torch (`RunContext`, `Batch`, `AdaptMethod`) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runner.datasets import DataContext, DatasetSpec, Split
from runner.errors import DataError, Hw3Error
from runner.hookspecs import PLUGIN_API_VERSION, hookimpl
from runner.method import Method, ReportRow
from runner.settings import option
from runner.version import __version__

if TYPE_CHECKING:
    from runner.adapt import AdaptMethod
    from runner.context import Batch, RunContext

# Exported names whose modules import torch: loaded by `__getattr__` when first asked for.
_LAZY = {"RunContext": "runner.context", "Batch": "runner.context", "AdaptMethod": "runner.adapt"}

__all__ = [
    "PLUGIN_API_VERSION",
    "AdaptMethod",
    "Batch",
    "DataContext",
    "DataError",
    "DatasetSpec",
    "Hw3Error",
    "Method",
    "ReportRow",
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
