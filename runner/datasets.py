"""The dataset contract: what a dataset plugin registers (`DatasetSpec`), what its `build`
receives (`DataContext`) and returns (`Split`s), and the checks every split passes.

Every dataset ends up as uint8 tensors (N, C, H, W) and int64 labels; `runner.cache` decodes
them once and caches them, `runner.batches` turns them into training and evaluation batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import DataError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Split:
    """One split of a dataset: uint8 images (N, C, H, W), int64 labels (N,), and for datasets
    with binary attributes (faces) a uint8 (N, A) matrix of them."""

    images: torch.Tensor
    labels: torch.Tensor
    attributes: torch.Tensor | None = None
    attribute_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: torch.Tensor) -> Split:
        attrs = self.attributes[idx] if self.attributes is not None else None
        return Split(self.images[idx], self.labels[idx], attrs, self.attribute_names)

    def subset(self, n: int, seed: int = 0) -> Split:
        """The same `n` images for every run seed: a fixed shuffle, then the first `n`."""
        import torch

        if n <= 0 or n >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n])

    def to(self, device: torch.device) -> Split:
        attrs = self.attributes.to(device) if self.attributes is not None else None
        return Split(self.images.to(device), self.labels.to(device), attrs, self.attribute_names)


class Problems:
    """Data problems: raised at the first one, or, for `hw3 data check`, all collected."""

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.found: list[str] = []

    def add(self, message: str) -> None:
        if not self.collect:
            raise DataError(message)
        self.found.append(message)


def _passthrough(items: Iterable[Any], total: int, description: str) -> Iterable[Any]:
    return items


@dataclass(frozen=True)
class DataContext:
    """What a dataset's `build` gets: where its files are looked for (`root`), the decoded-tensor
    cache, its options from registry.toml, and hooks for progress and problem reports."""

    root: Path
    cache_dir: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    download: bool = False
    track: Callable[[Iterable[Any], int, str], Iterable[Any]] = _passthrough
    problems: Problems = field(default_factory=Problems)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def for_dataset(self, spec: DatasetSpec, registry_options: Mapping[str, Any] | None = None) -> DataContext:
        """This context with `spec`'s options: its defaults, then registry.toml's values."""
        opts = {k: v[0] for k, v in spec.options.items()}
        opts.update({k: v for k, v in (registry_options or {}).items() if k in spec.options})
        return replace(self, options=opts)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset a plugin contributes with `hw3_register_datasets`.

    `build` reads the source files (or embedded data) and returns {"train": Split, "test": Split};
    `fingerprint` names those files and settings so the cache knows when to rebuild. `options`
    are dataset settings read from `[datasets.NAME]` in registry.toml: name -> (default, help).
    """

    name: str
    description: str
    channels: int
    size: int
    classes: tuple[str, ...]
    build: Callable[[DataContext], dict[str, Split]]
    fingerprint: Callable[[DataContext], str]
    domain: str = "digits"
    offline: Callable[[DataContext], bool] = field(default=lambda ctx: True)
    origin: Callable[[DataContext], str] = field(default=lambda ctx: "")
    attributes: tuple[str, ...] = ()
    options: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    download: Callable[[DataContext], None] | None = None


def check_dataset_spec(obj: Any) -> str:
    """Why `obj` can't be registered as a dataset, or '' when it can."""
    if not isinstance(obj, DatasetSpec):
        return f"register() got {obj!r}, which is not a runner.DatasetSpec"
    if not obj.name or ":" in obj.name:
        return f"dataset name {obj.name!r} must be non-empty and have no ':' (':' separates pairs)"
    if obj.channels not in (1, 3):
        return f"dataset '{obj.name}' has {obj.channels} channels; use 1 or 3"
    return ""


def check_splits(spec: DatasetSpec, splits: dict[str, Split], problems: Problems) -> None:
    """Report splits that break the contract: empty, not uint8 (N, C, H, W), labels that do not
    match the images or fall outside the classes."""
    import torch

    for name, s in splits.items():
        if len(s) == 0:
            problems.add(f"dataset '{spec.name}': split '{name}' is empty; add images to it")
            continue
        if s.images.dtype != torch.uint8 or s.images.ndim != 4:
            problems.add(f"dataset '{spec.name}': split '{name}' must be uint8 (N, C, H, W)")
        if s.images.shape[0] != s.labels.shape[0]:
            problems.add(f"dataset '{spec.name}': split '{name}' has unequal numbers of images and labels")
        low, high = int(s.labels.min()), int(s.labels.max())
        if low < 0 or high >= len(spec.classes):
            problems.add(
                f"dataset '{spec.name}': split '{name}' has label {low if low < 0 else high}, outside its "
                f"{len(spec.classes)} classes 0..{len(spec.classes) - 1}"
            )
