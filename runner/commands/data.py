"""The `hw3 data` commands: list, check, prepare and show datasets, outside of any run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runner.cache import cache_path, data_context, load_dataset
from runner.config import load_registry
from runner.datasets import DataContext, DatasetSpec, Problems, Split
from runner.errors import DataError, Hw3Error
from runner.runs.plugins import get_manager


def context_for(spec: DatasetSpec, data_root: str | None, **kw: Any) -> DataContext:
    """The data context a run would give `spec`: its options from registry.toml applied."""
    from dataclasses import replace

    base = replace(data_context(data_root), registered=get_manager().dataset, **kw)
    return base.for_dataset(spec, load_registry().datasets.get(spec.name))


@contextmanager
def progress_tracker(console: Console) -> Iterator[Any]:
    """A `track` callable for DataContext that draws a rich progress bar per stage."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:

        def track(items: Iterable[Any], total: int, description: str) -> Iterator[Any]:
            task = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(task)

        yield track


@dataclass
class SplitReport:
    images: int
    shape: tuple[int, ...]
    per_class: dict[str, int]


@dataclass
class CheckReport:
    name: str
    origin: str
    root: Path
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def check(name: str, data_root: str | None, console: Console | None = None) -> CheckReport:
    """Read every file of a dataset afresh and collect every problem instead of stopping at one."""
    spec = get_manager().dataset(name)
    problems = Problems(collect=True)
    with progress_tracker(console or Console(quiet=True)) as track:
        ctx = context_for(spec, data_root, problems=problems, track=track)
        report = CheckReport(name, spec.origin(ctx), ctx.root)
        try:
            splits = load_dataset(spec, ctx)
        except DataError as exc:
            problems.found.append(str(exc))
            splits = {}
    if "train" in splits and "val" not in splits:  # what runs hold out for validation
        fraction = validation_fraction()
        train, val = splits["train"].held_out(fraction)
        rest = {k: v for k, v in splits.items() if k != "train"}
        splits = {"train": train, f"val ({fraction:.0%} of train, held out)": val, **rest}
    for split_name, s in splits.items():
        report.splits[split_name] = SplitReport(len(s), tuple(s.images.shape[1:]), _per_class(s, spec.classes))
    report.problems = problems.found
    return report


def _per_class(split: Split, classes: tuple[str, ...]) -> dict[str, int]:
    """Images per class name (an unknown label under its number); nothing for labels that are not
    integers, a problem the check has already reported."""
    if split.labels.is_floating_point() or split.labels.ndim != 1:
        return {}
    counts = dict.fromkeys(classes, 0)
    for label, n in zip(*[t.tolist() for t in split.labels.unique(return_counts=True)], strict=True):
        counts[classes[label] if 0 <= label < len(classes) else str(label)] = n
    return counts


def validation_fraction() -> float:
    """The `val_fraction` runs use: registry.toml's [defaults], else the setting's own default."""
    from runner.settings import RunSettings

    return float(load_registry().defaults.get("val_fraction", RunSettings.val_fraction))


def prepare(name: str, data_root: str | None, download: bool, console: Console) -> tuple[Path, dict[str, Split]]:
    """Decode a dataset into the cache (downloading first if asked), with progress bars."""
    spec = get_manager().dataset(name)
    ctx = context_for(spec, data_root)
    if download:
        if spec.download is None:
            raise Hw3Error(f"dataset '{name}' has no download; it is {spec.origin(ctx) or 'made locally'}")
        console.print(f"downloading {name} into {ctx.root}")
        try:
            spec.download(ctx)
        except Exception as exc:
            raise Hw3Error(f"downloading {name} failed: {type(exc).__name__}: {exc}; check the network") from None
    with progress_tracker(console) as track:
        ctx = context_for(spec, data_root, track=track)
        splits = load_dataset(spec, ctx)
    return cache_path(spec, ctx), splits


def show(name: str, data_root: str | None, out: Path, per_class: int, console: Console) -> Path:
    """A PNG of samples: a row per class (the first training images of each)."""
    import torch
    from torchvision.utils import make_grid, save_image

    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise Hw3Error(f"--out {out}: give a .png or .jpg file name")
    if not out.parent.is_dir():
        raise Hw3Error(f"--out {out}: folder {out.parent} does not exist; create it first")
    spec = get_manager().dataset(name)
    with progress_tracker(console) as track:
        splits = load_dataset(spec, context_for(spec, data_root, track=track))
    train = splits["train"]
    rows = []
    for k in range(len(spec.classes)):
        idx = (train.labels == k).nonzero().flatten()[:per_class]
        imgs = train.images[idx]
        if imgs.shape[1] == 1:
            imgs = imgs.expand(-1, 3, -1, -1)
        pad = torch.zeros((per_class - len(imgs), *imgs.shape[1:]), dtype=imgs.dtype)
        rows.append(torch.cat([imgs, pad]))
    grid = make_grid(torch.cat(rows).float() / 255, nrow=per_class, padding=2, pad_value=1.0)
    scale = max(1, 64 // spec.size) if spec.size < 64 else 1
    if scale > 1:  # small digits are easier to see enlarged
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    save_image(grid, out)
    return out


def cached(spec: DatasetSpec, data_root: str | None) -> bool:
    try:
        return cache_path(spec, context_for(spec, data_root)).exists()
    except Exception:
        return False
