"""The decoded-tensor cache: each dataset is decoded once, saved under a fingerprint of its
source files and settings, and loaded from there by every later run.

Epochs then index tensors instead of opening image files, which is where most of a small-image
training loop's time usually goes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from runner.datasets import DataContext, DatasetSpec, Split, check_splits

CACHE_FORMAT = "2"  # bump when the cached layout changes, so old entries are rebuilt


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
        fresh = spec.build(ctx)
        check_splits(spec, fresh, ctx.problems)
        return fresh
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
        check_splits(spec, splits, ctx.problems)
        atomic_save({name: _as_dict(s) for name, s in splits.items()}, path)
    _memo[path] = splits
    return splits


def _as_dict(split: Split) -> dict[str, Any]:
    out: dict[str, Any] = {"images": split.images.contiguous(), "labels": split.labels.contiguous()}
    if split.attributes is not None:
        out["attributes"] = split.attributes.contiguous()
        out["attribute_names"] = list(split.attribute_names)
    return out


def cache_path(spec: DatasetSpec, ctx: DataContext) -> Path:
    key = hashlib.sha256(f"{CACHE_FORMAT}|{spec.name}|{spec.fingerprint(ctx)}".encode()).hexdigest()[:16]
    return ctx.cache_dir / f"{spec.name}-{key}.pt"


def check_writable(folder: Path, what: str) -> Path:
    """`folder`, created if need be, once a file could be written in it; else one line naming
    `what` (the setting or variable that chose it) and the fix."""
    from runner.errors import ConfigError

    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what}={folder}: that is a file, not a folder; give a folder you can write")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".hw3-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}={folder}: cannot write there ({why}); give a folder you can write") from None
    return folder


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
