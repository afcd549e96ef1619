"""`svhn`: Street View House Numbers, cropped digits (Netzer et al., 2011), 32x32 colour.

Read from the course layout (`svhn/{train,test}/*.png` with `train.csv`, `test.csv`) or from
torchvision's files (`train_32x32.mat`, `test_32x32.mat`, in `svhn/` or the data root).
`hw3 data prepare svhn --download` fetches the .mat files where a network exists; without one,
`syndigits` is an SVHN-like domain made offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.datasets.readers import course_folder, files_fingerprint, first_file, read_course, read_svhn_mat
from runner import DatasetSpec, Split, hookimpl
from runner.data import DataContext
from runner.errors import DataError

DIGITS = tuple(str(d) for d in range(10))
SPLITS = ("train", "test")


def mat_files(ctx: DataContext) -> dict[str, Path] | None:
    found = {s: first_file(ctx.root / "svhn" / f"{s}_32x32.mat", ctx.root / f"{s}_32x32.mat") for s in SPLITS}
    return found if all(found.values()) else None  # type: ignore[return-value]


def build(ctx: DataContext) -> dict[str, Split]:
    folder = course_folder(ctx.root, "svhn")
    if folder is not None:
        return read_course(folder, ctx, 3, 10, "svhn")
    mats = mat_files(ctx)
    if mats is not None:
        return {s: read_svhn_mat(p) for s, p in mats.items()}
    raise DataError(
        f"no SVHN data under {ctx.root} (looked for svhn/train.csv and svhn/train_32x32.mat); "
        "run `hw3 data prepare svhn --download` where a network exists, pass --data-root, "
        "or use the offline SVHN-like domain syndigits"
    )


def fingerprint(ctx: DataContext) -> str:
    from plugins.datasets.readers import tree_fingerprint

    folder = course_folder(ctx.root, "svhn")
    if folder is not None:
        return f"course:{tree_fingerprint(folder)}"
    return f"mat:{files_fingerprint(list((mat_files(ctx) or {}).values()))}"


def origin(ctx: DataContext) -> str:
    folder = course_folder(ctx.root, "svhn")
    if folder is not None:
        return f"course folder {folder}"
    mats = mat_files(ctx)
    return f".mat files in {mats['train'].parent}" if mats else f"not found under {ctx.root}"


def download(ctx: DataContext) -> None:
    from torchvision.datasets import SVHN as TorchSVHN

    for split in ("train", "test"):
        TorchSVHN(str(ctx.root / "svhn"), split=split, download=True)


SVHN = DatasetSpec(
    name="svhn",
    description="SVHN house-number digits, 32x32 colour (course folder or torchvision .mat files)",
    channels=3,
    size=32,
    classes=DIGITS,
    build=build,
    fingerprint=fingerprint,
    offline=lambda ctx: course_folder(ctx.root, "svhn") is not None or mat_files(ctx) is not None,
    origin=origin,
    download=download,
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(SVHN)
