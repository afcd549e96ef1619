"""`usps`: USPS handwritten digits, 16x16 grey (course folder or torchvision's .bz2 files)."""

from __future__ import annotations

from typing import Any

from plugins.datasets.digits import course_or_files
from plugins.datasets.readers import read_usps_bz2
from runner import DataContext, hookimpl


def download(ctx: DataContext) -> None:
    from torchvision.datasets import USPS as TorchUSPS

    for train in (True, False):
        TorchUSPS(str(ctx.root / "usps"), train=train, download=True)


USPS = course_or_files(
    name="usps",
    description="USPS handwritten digits, 16x16 grey (course folder or torchvision .bz2 files)",
    channels=1,
    size=16,
    size_varies=True,  # the course folder holds 28-px images
    files={"train": "usps.bz2", "test": "usps.t.bz2"},
    read=read_usps_bz2,
    download=download,
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(USPS)
