"""Lazy exports for hw3's public packages (`runner`, `runner.adapt`, `runner.generate`): a name is
imported from its module when first asked for, so `import runner` and a plugin that only
subclasses a base class stay free of torch (and `hw3 list` stays fast).

A package lists each such name twice, in its `__all__` and in an import under
`if TYPE_CHECKING:` (which type checkers and editors read); that import is also where this
finds the name's module, so there is no third table to keep in step.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lazy_exports(namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for the package whose `globals()` is `namespace`."""
    package = namespace["__name__"]
    tree = ast.parse(Path(namespace["__file__"]).read_text())
    where = {
        alias.asname or alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
