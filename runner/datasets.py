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

VALIDATION_SEED = 20240601  # the held-out validation images are the same for every run


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

    def held_out(self, fraction: float) -> tuple[Split, Split]:
        """(the rest, the held-out part): `fraction` of each class, the same images every time
        (a fixed shuffle), for validation. The rest keeps the original order."""
        import torch

        if fraction <= 0 or len(self) == 0:
            return self, self.take(torch.zeros(0, dtype=torch.long))
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(VALIDATION_SEED))
        labels = self.labels.cpu()[order]
        chosen = torch.zeros(len(self), dtype=torch.bool)
        for k in labels.unique():
            mine = order[labels == k]
            chosen[mine[: round(fraction * len(mine))]] = True
        keep = torch.arange(len(self))
        return self.take(keep[~chosen]), self.take(keep[chosen])

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
    # The registered datasets by name, where hw3 builds this context for a run or a `hw3 data` command.
    registered: Callable[[str], DatasetSpec] | None = None

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset registered as `name`, whichever package brings it: for a dataset built
        from another (the example plugin's `mnist-rotated` reads `ctx.dataset("mnist")`)."""
        if self.registered is None:
            raise DataError(f"dataset '{name}': this data context has no registered datasets to look it up in")
        return self.registered(name)

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
    # Run settings a run using this dataset starts from, such as {"image_size": 32}: above hw3's
    # [defaults], below registry.toml's [datasets.NAME] and everything after it.
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    # True when the loader's square size depends on the files (USPS: 16 px from torchvision's
    # files, 28 px in the course folder); channels are still checked, and `size` is the usual one.
    size_varies: bool = False


def check_dataset_spec(obj: Any) -> str:
    """Why `obj` can't be registered as a dataset, or '' when it can."""
    if not isinstance(obj, DatasetSpec):
        return f"register() got {obj!r}, which is not a runner.DatasetSpec"
    if not obj.name or ":" in obj.name:
        return f"dataset name {obj.name!r} must be non-empty and have no ':' (':' separates pairs)"
    if obj.channels not in (1, 3):
        return f"dataset '{obj.name}' has {obj.channels} channels; use 1 or 3"
    from runner.settings import RUN_KEYS

    if unknown := set(obj.run_defaults) - RUN_KEYS:
        return f"dataset '{obj.name}': run_defaults has {sorted(unknown)}, which are not run settings"
    return ""


def check_splits(spec: DatasetSpec, splits: dict[str, Split], problems: Problems) -> None:
    """Report splits that break the contract: empty; images that are not uint8 (N, C, H, W) of the
    channels and size the spec declares; labels that are not integers, do not match the images,
    or fall outside the classes. Each message says what was found."""
    import torch

    declared = f"{spec.channels} channel(s) of {spec.size}x{spec.size}"
    for name, s in splits.items():
        where = f"dataset '{spec.name}': split '{name}'"
        if len(s) == 0:
            problems.add(f"{where} is empty; add images to it")
            continue
        x, y = s.images, s.labels
        if x.dtype != torch.uint8:
            problems.add(f"{where} must hold uint8 images (N, C, H, W), got {str(x.dtype).removeprefix('torch.')}")
        if x.ndim != 4:
            problems.add(f"{where} must hold images shaped (N, C, H, W), got shape {tuple(x.shape)}")
        elif x.shape[1] != spec.channels or (
            (x.shape[2], x.shape[3]) != (spec.size, spec.size) and not (spec.size_varies and x.shape[2] == x.shape[3])
        ):
            problems.add(
                f"{where} has {x.shape[1]} channel(s) of {x.shape[2]}x{x.shape[3]}, but the dataset declares "
                f"{declared}; make DatasetSpec(channels=..., size=...) say what its loader returns"
            )
        if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1:
            problems.add(
                f"{where} must have int64 labels shaped (N,), got {str(y.dtype).removeprefix('torch.')} "
                f"of shape {tuple(y.shape)}"
            )
            continue
        if x.shape[0] != y.shape[0]:
            problems.add(f"{where} has {x.shape[0]} images but {y.shape[0]} labels")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= len(spec.classes):
            problems.add(
                f"{where} has label {low if low < 0 else high}, outside its "
                f"{len(spec.classes)} classes 0..{len(spec.classes) - 1}"
            )


@dataclass(frozen=True)
class DatasetTables:
    """What `hw3_register_datasets` receives as `registry`: the `[datasets.NAME]` tables of
    registry.toml (the packaged file merged with $HW3_REGISTRY's), and the file they came from."""

    datasets: Mapping[str, Mapping[str, Any]]
    path: Path | None = None
