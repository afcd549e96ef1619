"""hw3: a plugin-based experiment runner for GANs and domain adaptation.

The names plugin authors use are exported here; the rest of the package is internal.
Importing this module stays cheap (no torch, no mlflow) so `hw3 list` starts fast.
"""

from runner.data import DatasetSpec, Split
from runner.errors import Hw3Error
from runner.hookspecs import hookimpl
from runner.method import Method, option

__version__ = "0.1.0"
# Bumped when the plugin contract (hooks, Method, DatasetSpec, RunContext) changes incompatibly.
PLUGIN_API_VERSION = "1"

__all__ = [
    "PLUGIN_API_VERSION",
    "DatasetSpec",
    "Hw3Error",
    "Method",
    "Split",
    "__version__",
    "hookimpl",
    "option",
]
