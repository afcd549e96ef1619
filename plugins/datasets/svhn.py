"""`svhn`: Street View House Numbers, cropped digits (Netzer et al., 2011), 32x32 colour.

Read from the course layout (`svhn/{train,test}/*.png` with `train.csv`, `test.csv`) or from
torchvision's files (`train_32x32.mat`, `test_32x32.mat`, in `svhn/` or the data root).
`hw3 data prepare svhn --download` fetches the .mat files where a network exists; without one,
`syndigits` is an SVHN-like domain made offline.
"""

from __future__ import annotations

from typing import Any

from plugins.datasets.digits import course_or_files
from plugins.datasets.readers import read_svhn_mat
from runner import DataContext, hookimpl


def download(ctx: DataContext) -> None:
    from torchvision.datasets import SVHN as TorchSVHN

    for split in ("train", "test"):
        TorchSVHN(str(ctx.root / "svhn"), split=split, download=True)


SVHN = course_or_files(
    name="svhn",
    description="SVHN house-number digits, 32x32 colour (course folder or torchvision .mat files)",
    channels=3,
    size=32,
    files={"train": "train_32x32.mat", "test": "test_32x32.mat"},
    read=read_svhn_mat,
    download=download,
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(SVHN)
