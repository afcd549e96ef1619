"""Readers for the formats users arrive with, each checked with a one-line error per problem.

- course folders: `<split>/*.png` beside `<split>.csv` of `image_name,label` (or attributes)
- class-per-subfolder trees: `<split>/<class>/*.png`
- MNIST idx files, SVHN `.mat`, USPS `.bz2` (libsvm), CelebA's attribute and partition lists
Every reader returns uint8 (N, C, H, W) images and int64 labels through `runner.Split`.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner import DataContext, DataError, Split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def find_dir(root: Path, *candidates: str) -> Path | None:
    """The first of `root/<candidate>` that is a folder."""
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return None


def files_fingerprint(paths: Sequence[Path]) -> str:
    """Names, sizes and modification times: changes whenever a source file changes."""
    h = hashlib.sha256()
    for p in sorted(paths):
        try:
            st = p.stat()
        except FileNotFoundError:
            h.update(f"{p}:missing".encode())
            continue
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def tree_fingerprint(folder: Path) -> str:
    """A fingerprint of every file under `folder` (a missing folder fingerprints as such)."""
    if not folder.is_dir():
        return f"{folder}:missing"
    paths = [Path(dirpath) / f for dirpath, _, files in os.walk(folder) for f in files]
    return files_fingerprint(paths)


def decode_images(paths: Sequence[Path], ctx: DataContext, channels: int, what: str, size: int | None = None) -> Any:
    """Decode image files into one uint8 (N, C, H, W) tensor, in parallel threads; also returns
    which paths made it in (a bool per path), for the caller to keep the matching labels.

    All images must share one size, unless `size` asks for a centre crop resized to that side
    (for photographs of varying size, such as CelebA's).
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"

    def load(path: Path) -> Any:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if size is not None:
                    side = min(im.size)
                    left, top = (im.width - side) // 2, (im.height - side) // 2
                    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
                return np.asarray(im)
        except FileNotFoundError:
            ctx.problems.add(f"{path}: file not found; it is named in the labels file, so add it or remove its row")
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            ctx.problems.add(f"{path}: not a readable image ({type(exc).__name__}); replace or delete the file")
        return None

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        arrays = list(ctx.track(pool.map(load, paths), len(paths), f"decoding {what}"))
    keep = [a is not None for a in arrays]
    shapes = [a.shape for a in arrays if a is not None]
    if shapes and len(set(shapes)) > 1:  # report the first odd one out, keep the common size
        common = max(set(shapes), key=shapes.count)
        odd = next(i for i, a in enumerate(arrays) if a is not None and a.shape != common)
        h, w = arrays[odd].shape[:2]
        ctx.problems.add(
            f"{paths[odd]}: image is {w}x{h} but most are {common[1]}x{common[0]}; images of one dataset "
            "must share a size: resize or remove the odd ones"
        )
        keep = [a is not None and a.shape == common for a in arrays]
    kept = [a for a, k in zip(arrays, keep, strict=True) if k]
    if not kept:
        return torch.zeros((0, channels, size or 1, size or 1), dtype=torch.uint8), torch.tensor(keep, dtype=torch.bool)
    stack = np.stack(kept)
    stack = stack[:, None] if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stack)), torch.tensor(keep, dtype=torch.bool)


def read_table(path: Path, ctx: DataContext, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file that must have the `required` columns."""
    if not path.is_file():
        ctx.problems.add(f"{path}: labels file not found; it lists image_name,label for the images beside it")
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            ctx.problems.add(
                f"{path}: missing column(s) {', '.join(missing)} (it has {', '.join(header) or 'no header'}); "
                f"the first line must name the columns {','.join(required)}"
            )
            return []
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def inside(folder: Path, name: str, table: Path, ctx: DataContext) -> Path | None:
    """`folder/name`, refusing a name that climbs out of the dataset folder."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        ctx.problems.add(f"{table}: image_name '{name}' points outside {folder}; names must be paths inside it")
        return None
    return path


def read_csv_split(folder: Path, table: Path, ctx: DataContext, channels: int, n_classes: int, what: str) -> Split:
    """A course-layout split: images in `folder`, `image_name,label` rows in `table`."""
    if not folder.is_dir():
        ctx.problems.add(f"{folder}: folder not found (expected the images listed in {table.name})")
        return empty_split(channels)
    rows = read_table(table, ctx, ["image_name", "label"])
    return split_from_rows(folder, table, rows, ctx, channels, n_classes, what)


def split_from_rows(
    folder: Path, table: Path, rows: list[dict[str, str]], ctx: DataContext, channels: int, n_classes: int, what: str
) -> Split:
    """Decode the images named by `rows` ({"image_name", "label"}), checking every row."""
    import torch

    paths, labels = [], []
    for i, row in enumerate(rows, start=1):
        try:
            label = int(float(row["label"]))
        except ValueError:
            ctx.problems.add(f"{table}: row {i}: label {row['label']!r} is not a whole number")
            continue
        if not 0 <= label < n_classes:
            ctx.problems.add(f"{table}: row {i}: label {label} is outside the classes 0..{n_classes - 1}")
            continue
        path = inside(folder, row["image_name"], table, ctx)
        if path is not None:
            paths.append(path)
            labels.append(label)
    if not paths:
        if table.is_file():
            ctx.problems.add(f"{table}: no usable rows; an empty split cannot train or test anything")
        return empty_split(channels)
    images, keep = decode_images(paths, ctx, channels, what)
    return Split(images, torch.tensor(labels, dtype=torch.long)[keep])


def read_class_folders(folder: Path, ctx: DataContext, channels: int, classes: Sequence[str], what: str) -> Split:
    """`folder/<class>/*.png`: the label is the class folder's index in `classes`."""
    import torch

    paths, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in classes:
            ctx.problems.add(f"{sub}: folder name is not one of the classes {', '.join(classes)}")
            continue
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(classes.index(sub.name))
    if not paths:
        ctx.problems.add(f"{folder}: no images in class subfolders; an empty split cannot train or test anything")
        return empty_split(channels)
    images, keep = decode_images(paths, ctx, channels, what)
    return Split(images, torch.tensor(labels, dtype=torch.long)[keep])


def empty_split(channels: int) -> Split:
    import torch

    return Split(torch.zeros((0, channels, 1, 1), dtype=torch.uint8), torch.zeros(0, dtype=torch.long))


def read_idx(path: Path) -> Any:
    """An MNIST idx file (optionally .gz) as a numpy array."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path}: not an idx file of unsigned bytes (bad magic number); re-download it")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: holds {body.size} bytes but its header says {dims}; the file is truncated")
    return body.reshape(dims)


def read_svhn_mat(path: Path) -> Split:
    """torchvision's SVHN file: X (32, 32, 3, N) uint8, y (N, 1) with 10 standing for digit 0."""
    import numpy as np
    import torch
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}); re-download it") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: has no 'X' and 'y' arrays; it is not an SVHN cropped-digits file")
    x = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))
    y = mat["y"].astype(np.int64).reshape(-1) % 10
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def read_usps_bz2(path: Path) -> Split:
    """torchvision's USPS file: libsvm lines `label 1:v 2:v ...`, labels 1-10, values in [-1, 1]."""
    import numpy as np
    import torch

    images, labels = [], []
    with bz2.open(path, "rt") as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                label = int(float(parts[0])) - 1
                values = np.zeros(256, dtype=np.float32)
                for item in parts[1:]:
                    k, v = item.split(":")
                    values[int(k) - 1] = float(v)
            except (ValueError, IndexError):
                raise DataError(f"{path}: line {n} is not 'label index:value ...'; re-download the file") from None
            images.append(values)
            labels.append(label)
    arr = ((np.stack(images) + 1) / 2 * 255).round().clip(0, 255).astype(np.uint8).reshape(-1, 1, 16, 16)
    return Split(torch.from_numpy(arr), torch.tensor(labels, dtype=torch.long))


def course_folder(root: Path, name: str) -> Path | None:
    """`root/name` or `root/digits/name` holding the course layout (a train.csv beside train/)."""
    for d in (root / name, root / "digits" / name):
        if (d / "train.csv").is_file():
            return d
    return None


def read_course(folder: Path, ctx: DataContext, channels: int, n_classes: int, name: str) -> dict[str, Split]:
    return {
        s: read_csv_split(folder / s, folder / f"{s}.csv", ctx, channels, n_classes, f"{name} {s}")
        for s in ("train", "test")
    }


def first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)
