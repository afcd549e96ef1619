"""Digit datasets that come either in the course layout or as torchvision's files (svhn, usps)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from plugins.datasets.readers import course_folder, files_fingerprint, first_file, read_course, tree_fingerprint
from runner import DataContext, DataError, DatasetSpec, Split

DIGITS = tuple(str(d) for d in range(10))


def course_or_files(
    *,
    name: str,
    description: str,
    channels: int,
    size: int,
    files: dict[str, str],
    read: Callable[[Path], Split],
    download: Callable[[DataContext], None],
    size_varies: bool = False,
) -> DatasetSpec:
    """A spec reading `name/` in the course layout, else torchvision's per-split `files` (looked
    for in `name/` and the data root), read by `read`."""

    def found(ctx: DataContext) -> dict[str, Path] | None:
        paths = {s: first_file(ctx.root / name / f, ctx.root / f) for s, f in files.items()}
        return paths if all(paths.values()) else None  # type: ignore[return-value]

    def build(ctx: DataContext) -> dict[str, Split]:
        if (folder := course_folder(ctx.root, name)) is not None:
            return read_course(folder, ctx, channels, len(DIGITS), name)
        if (paths := found(ctx)) is not None:
            return {s: read(p) for s, p in paths.items()}
        raise DataError(
            f"no {name} data under {ctx.root} (looked for {name}/train.csv and {name}/{files['train']}); "
            f"run `hw3 data prepare {name} --download` where a network exists, or pass --data-root"
            + (", or use the offline SVHN-like domain syndigits" if name == "svhn" else "")
        )

    def fingerprint(ctx: DataContext) -> str:
        if (folder := course_folder(ctx.root, name)) is not None:
            return f"course:{tree_fingerprint(folder)}"
        return f"files:{files_fingerprint(list((found(ctx) or {}).values()))}"

    def origin(ctx: DataContext) -> str:
        if (folder := course_folder(ctx.root, name)) is not None:
            return f"course folder {folder}"
        paths = found(ctx)
        return f"torchvision files in {paths['train'].parent}" if paths else f"not found under {ctx.root}"

    return DatasetSpec(
        name=name,
        description=description,
        channels=channels,
        size=size,
        classes=DIGITS,
        build=build,
        fingerprint=fingerprint,
        offline=lambda ctx: course_folder(ctx.root, name) is not None or found(ctx) is not None,
        origin=origin,
        download=download,
        size_varies=size_varies,
    )
