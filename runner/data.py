"""Dataset specs, the decoded-tensor cache, and the batch streams the engine draws from.

Every dataset ends up as uint8 tensors (N, C, H, W) and int64 labels, decoded once and cached by
a fingerprint of its source files and settings. Epochs then index tensors instead of opening
image files, which is where most of a small-image training loop's time usually goes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import DataError

if TYPE_CHECKING:
    import torch

CACHE_FORMAT = "2"  # bump when the cached layout changes, so old entries are rebuilt


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


def data_context(root: str | os.PathLike[str] | None = None) -> DataContext:
    """--data-root, then HW3_DATA_ROOT, then ~/.cache/hw3; the cache defaults to <that>/cache."""
    base = Path(root or os.environ.get("HW3_DATA_ROOT") or Path.home() / ".cache" / "hw3")
    cache = Path(os.environ.get("HW3_CACHE_DIR") or Path.home() / ".cache" / "hw3" / "cache")
    return DataContext(root=base.expanduser(), cache_dir=cache.expanduser())


_memo: dict[Path, dict[str, Split]] = {}


def load_dataset(spec: DatasetSpec, ctx: DataContext) -> dict[str, Split]:
    """The decoded splits of `spec`, from the cache when its fingerprint still matches."""
    import torch

    if ctx.problems.collect:  # `hw3 data check`: read the files afresh, cache nothing
        splits = spec.build(ctx)
        _check_splits(spec, splits, ctx.problems)
        return splits
    path = cache_path(spec, ctx)
    if path in _memo:
        return _memo[path]
    splits: dict[str, Split] | None = None
    if path.exists():
        try:
            raw = torch.load(path, weights_only=True)
            splits = {
                name: Split(s["images"], s["labels"], s.get("attributes"), tuple(s.get("attribute_names", ())))
                for name, s in raw.items()
            }
        except Exception:  # a cache entry from an older torch or a damaged disk: rebuild it
            splits = None
    if splits is None:
        splits = spec.build(ctx)
        _check_splits(spec, splits, ctx.problems)
        raw = {name: _as_dict(s) for name, s in splits.items()}
        atomic_save(raw, path)
    _memo[path] = splits
    return splits


def _as_dict(split: Split) -> dict[str, Any]:
    out = {"images": split.images.contiguous(), "labels": split.labels.contiguous()}
    if split.attributes is not None:
        out["attributes"] = split.attributes.contiguous()
        out["attribute_names"] = list(split.attribute_names)
    return out


def cache_path(spec: DatasetSpec, ctx: DataContext) -> Path:
    key = hashlib.sha256(f"{CACHE_FORMAT}|{spec.name}|{spec.fingerprint(ctx)}".encode()).hexdigest()[:16]
    return ctx.cache_dir / f"{spec.name}-{key}.pt"


def _check_splits(spec: DatasetSpec, splits: dict[str, Split], problems: Problems) -> None:
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


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def conform(split: Split, channels: int, size: int) -> Split:
    """Bring a split to a common channel count and square size, staying uint8."""
    import torch
    import torch.nn.functional as F

    x = split.images
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return Split(x, split.labels, split.attributes, split.attribute_names)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the input range of every built-in network."""
    return images.float().div_(127.5).sub_(1.0)


class BatchStream:
    """Endless shuffled batches of one split, whose position checkpoints exactly.

    The permutation comes from its own CPU generator, so resuming from a checkpoint draws the
    same batches an uninterrupted run would have drawn.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        seed: int,
        labels: bool,
        channels_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        import torch

        if len(split) < batch_size * world:
            raise DataError(
                f"a training split has {len(split)} images, fewer than batch_size={batch_size} x {world} "
                "process(es); lower it with --set batch_size=N"
            )
        self.split, self.batch_size, self.labels = split, batch_size, labels
        # Distributed: every process shuffles alike and takes its own slice of each global batch.
        self.rank, self.world = rank, world
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        import torch

        n = len(self.split)
        step = self.batch_size * self.world
        if self.perm is None or self.pos + step > n:  # drop the ragged tail, as drop_last
            self.perm = torch.randperm(n, generator=self.generator)
            self.pos = 0
        start = self.pos + self.rank * self.batch_size
        idx = self.perm[start : start + self.batch_size].to(self.split.images.device)
        self.pos += step
        x = to_unit_range(self.split.images[idx])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (self.split.labels[idx] if self.labels else None)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"], state["pos"]


def batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, for evaluation."""
    for i in range(0, len(split), batch_size):
        yield to_unit_range(split.images[i : i + batch_size]), split.labels[i : i + batch_size]
