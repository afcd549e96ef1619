"""hw3: a plugin-based experiment runner for GANs and domain adaptation.

This module only re-exports the names plugin authors use; the rest of the package is internal.
Importing it stays cheap (no torch, no mlflow) so `hw3 list` starts fast: the names that need
torch (`RunContext`, `Batch`, `AdaptMethod`) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.datasets import DataContext, DatasetSpec, Split
from runner.errors import ConfigError, DataError, Hw3Error
from runner.hookspecs import PLUGIN_API_VERSION, hookimpl
from runner.lazy import lazy_exports
from runner.method import Method, ReportRow
from runner.settings import option
from runner.validator import Candidate, Outputs, StudyValidator, ValidationData, Validator
from runner.version import __version__

if TYPE_CHECKING:
    from runner.adapt import AdaptMethod
    from runner.context import Batch, RunContext

__all__ = [
    "PLUGIN_API_VERSION",
    "AdaptMethod",
    "Batch",
    "Candidate",
    "ConfigError",
    "DataContext",
    "DataError",
    "DatasetSpec",
    "Hw3Error",
    "Method",
    "Outputs",
    "ReportRow",
    "RunContext",
    "Split",
    "StudyValidator",
    "ValidationData",
    "Validator",
    "__version__",
    "hookimpl",
    "option",
]


__getattr__, __dir__ = lazy_exports(globals())
