"""`mnistm`: MNIST-M from the files users have, or built offline by the published recipe.

Looked for in order: the course layout (`mnistm/{train,test}/*.png` with `train.csv`,
`test.csv` of image_name,label), the layout the dataset is usually shared in
(`mnist_m/mnist_m_train/*.png` with `mnist_m_train_labels.txt` of "name label" lines), and
otherwise built by Ganin & Lempitsky's recipe: each MNIST digit is binarised and
difference-blended, |patch - digit|, with a random patch of a colour photograph. The photos come
from `[datasets.mnistm] backgrounds = "DIR"` (BSDS500, as the paper used) or, by default, the
two real photographs that ship with scikit-learn. Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.datasets.readers import IMAGE_SUFFIXES, find_dir, read_csv_split, split_from_rows, tree_fingerprint
from runner import DataContext, DataError, DatasetSpec, Split, hookimpl
from runner.data import load_dataset

DIGITS = tuple(str(d) for d in range(10))
SPLITS = ("train", "test")


def course_dir(ctx: DataContext) -> Path | None:
    d = find_dir(ctx.root, "mnistm", "digits/mnistm")
    return d if d is not None and (d / "train.csv").is_file() else None


def shared_dir(ctx: DataContext) -> Path | None:
    d = find_dir(ctx.root, "mnist_m", "mnistm", "digits/mnist_m")
    return d if d is not None and (d / "mnist_m_train_labels.txt").is_file() else None


def layout(ctx: DataContext) -> str:
    source = ctx.option("source", "auto")
    if source != "auto":
        return source
    if course_dir(ctx):
        return "course"
    return "shared" if shared_dir(ctx) else "build"


def backgrounds(ctx: DataContext) -> list[Any]:
    """Background photos as uint8 (H, W, 3) arrays."""
    import numpy as np

    folder = ctx.option("backgrounds") or ""
    if not folder:
        from sklearn.datasets import load_sample_images

        return list(load_sample_images().images)  # two real (427, 640, 3) photographs
    path = Path(folder).expanduser()
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else []
    if not files:
        raise DataError(f"{path}: no photographs for MNIST-M backgrounds; point `backgrounds` at a folder of images")
    from PIL import Image

    photos = []
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB"))
        if min(arr.shape[:2]) > 28:
            photos.append(arr)
    return photos


def blend(digits: Any, photos: list[Any], seed: int) -> Any:
    """uint8 (N, 1, H, W) digits -> uint8 (N, 3, H, W) MNIST-M images."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    n, _, h, w = digits.shape
    which = rng.integers(0, len(photos), n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    mask = (digits[:, 0].numpy() > 0)[..., None]  # binarised, as in the recipe
    for k, photo in enumerate(photos):
        idx = np.flatnonzero(which == k)
        top = rng.integers(0, photo.shape[0] - h, len(idx))
        left = rng.integers(0, photo.shape[1] - w, len(idx))
        rows = top[:, None, None] + np.arange(h)[None, :, None]
        cols = left[:, None, None] + np.arange(w)[None, None, :]
        patches = photo[rows, cols].astype(np.int16)  # (n_k, h, w, 3)
        out[idx] = np.abs(patches - 255 * mask[idx]).astype(np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def read_shared(folder: Path, ctx: DataContext) -> dict[str, Split]:
    out = {}
    for split in ("train", "test"):
        labels_file = folder / f"mnist_m_{split}_labels.txt"
        rows = []
        if labels_file.is_file():
            for n, line in enumerate(labels_file.read_text().splitlines(), start=1):
                parts = line.split()
                if len(parts) == 2:
                    rows.append({"image_name": parts[0], "label": parts[1]})
                elif parts:
                    ctx.problems.add(f"{labels_file}: line {n} is not 'image_name label'")
        else:
            ctx.problems.add(f"{labels_file}: labels file not found")
        out[split] = split_from_rows(folder / f"mnist_m_{split}", labels_file, rows, ctx, 3, 10, f"mnistm {split}")
    return out


def build(ctx: DataContext) -> dict[str, Split]:
    kind = layout(ctx)
    if kind == "course":
        folder = course_dir(ctx)
        if folder is None:
            raise DataError(f"no course-layout mnistm/ folder with train.csv under {ctx.root}")
        return {s: read_csv_split(folder / s, folder / f"{s}.csv", ctx, 3, 10, f"mnistm {s}") for s in SPLITS}
    if kind == "shared":
        folder = shared_dir(ctx)
        if folder is None:
            raise DataError(f"no mnist_m/ folder with mnist_m_train_labels.txt under {ctx.root}")
        return read_shared(folder, ctx)
    from plugins.datasets.mnist import MNIST

    mnist = load_dataset(MNIST, ctx.for_dataset(MNIST))
    photos = backgrounds(ctx)
    seed = int(ctx.option("seed", 42))
    return {
        name: Split(blend(split.images, photos, seed + i), split.labels.clone())
        for i, (name, split) in enumerate(sorted(mnist.items()))
    }


def fingerprint(ctx: DataContext) -> str:
    from importlib import metadata

    from plugins.datasets.mnist import MNIST

    kind = layout(ctx)
    if kind == "course":
        return f"course:{tree_fingerprint(course_dir(ctx) or ctx.root / 'mnistm')}"
    if kind == "shared":
        return f"shared:{tree_fingerprint(shared_dir(ctx) or ctx.root / 'mnist_m')}"
    photos = ctx.option("backgrounds") or f"sklearn-photos:{metadata.version('scikit-learn')}"
    if ctx.option("backgrounds"):
        photos = tree_fingerprint(Path(photos).expanduser())
    return f"built:{MNIST.fingerprint(ctx.for_dataset(MNIST))}|{photos}|seed{ctx.option('seed', 42)}"


def origin(ctx: DataContext) -> str:
    kind = layout(ctx)
    if kind == "course":
        return f"course folder {course_dir(ctx)}"
    if kind == "shared":
        return f"folder {shared_dir(ctx)}"
    photos = ctx.option("backgrounds") or "scikit-learn's photos"
    return f"built from mnist + {photos}"


MNISTM = DatasetSpec(
    name="mnistm",
    description="MNIST-M: MNIST digits blended with colour photo patches",
    channels=3,
    size=28,
    classes=DIGITS,
    build=build,
    fingerprint=fingerprint,
    origin=origin,
    options={
        "source": ("auto", "auto: course folder, then mnist_m/ folder, then build; or course, shared, build"),
        "backgrounds": ("", "folder of photographs for building MNIST-M (BSDS500); empty: scikit-learn's two"),
        "seed": (42, "seed of the patch positions when building"),
    },
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(MNISTM)
