"""`usps`: USPS handwritten digits, 16x16 grey (course folder or torchvision's .bz2 files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.datasets.readers import course_folder, files_fingerprint, first_file, read_course, read_usps_bz2
from runner import DatasetSpec, Split, hookimpl
from runner.data import DataContext
from runner.errors import DataError

FILES = {"train": "usps.bz2", "test": "usps.t.bz2"}


def bz2_files(ctx: DataContext) -> dict[str, Path] | None:
    found = {s: first_file(ctx.root / "usps" / f, ctx.root / f) for s, f in FILES.items()}
    return found if all(found.values()) else None  # type: ignore[return-value]


def build(ctx: DataContext) -> dict[str, Split]:
    folder = course_folder(ctx.root, "usps")
    if folder is not None:
        return read_course(folder, ctx, 1, 10, "usps")
    files = bz2_files(ctx)
    if files is not None:
        return {s: read_usps_bz2(p) for s, p in files.items()}
    raise DataError(
        f"no USPS data under {ctx.root} (looked for usps/train.csv and usps/usps.bz2); "
        "run `hw3 data prepare usps --download` where a network exists, or pass --data-root"
    )


def fingerprint(ctx: DataContext) -> str:
    from plugins.datasets.readers import tree_fingerprint

    folder = course_folder(ctx.root, "usps")
    if folder is not None:
        return f"course:{tree_fingerprint(folder)}"
    return f"bz2:{files_fingerprint(list((bz2_files(ctx) or {}).values()))}"


def origin(ctx: DataContext) -> str:
    folder = course_folder(ctx.root, "usps")
    if folder is not None:
        return f"course folder {folder}"
    files = bz2_files(ctx)
    return f".bz2 files in {files['train'].parent}" if files else f"not found under {ctx.root}"


def download(ctx: DataContext) -> None:
    from torchvision.datasets import USPS as TorchUSPS

    for train in (True, False):
        TorchUSPS(str(ctx.root / "usps"), train=train, download=True)


USPS = DatasetSpec(
    name="usps",
    description="USPS handwritten digits, 16x16 grey",
    channels=1,
    size=16,
    classes=tuple(str(d) for d in range(10)),
    build=build,
    fingerprint=fingerprint,
    offline=lambda ctx: course_folder(ctx.root, "usps") is not None or bz2_files(ctx) is not None,
    origin=origin,
    download=download,
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(USPS)
