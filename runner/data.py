"""The data helpers dataset plugins use, under one name that stays put.

Nothing in hw3 imports this module: it only re-exports the dataset contract (`runner.datasets`),
the decoded-tensor cache (`runner.cache`) and the batch helpers (`runner.batches`), so a plugin
can write `from runner.data import load_dataset` however those are arranged inside.
"""

from runner.batches import BatchStream, batches, conform, to_unit_range
from runner.cache import atomic_save, cache_path, data_context, load_dataset
from runner.datasets import DataContext, DatasetSpec, DatasetTables, Problems, Split

__all__ = [
    "BatchStream",
    "DataContext",
    "DatasetSpec",
    "DatasetTables",
    "Problems",
    "Split",
    "atomic_save",
    "batches",
    "cache_path",
    "conform",
    "data_context",
    "load_dataset",
    "to_unit_range",
]
