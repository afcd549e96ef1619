"""The data helpers dataset plugins use, under one name that stays put.

Nothing in hw3 imports this module: it only re-exports the dataset contract (`runner.datasets`),
the decoded-tensor cache (`runner.cache`) and the batch helpers (`runner.batches`), so a plugin
can write `from runner.data import load_dataset` however those are arranged inside.
"""

from runner.batches import BatchStream, batches, conform, to_network_range
from runner.cache import atomic_save, cache_path, data_context, load_dataset
from runner.datasets import DataContext, DatasetSpec, DatasetTables, Problems, Split

# The old name, which said [0, 1] for a map to [-1, 1]; kept for plugins written against it.
to_unit_range = to_network_range

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
    "to_network_range",
]
