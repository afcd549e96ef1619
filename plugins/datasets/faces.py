"""`faces`: 64x64 face photographs with binary attributes (Smiling, Male, ...).

Read from the course layout (`face/{train,test}/*.png` with `train.csv`, `test.csv` holding
`image_name` and one 0/1 column per attribute) or from CelebA in torchvision's layout
(`celeba/img_align_celeba/*.jpg`, `list_attr_celeba.txt`, `list_eval_partition.txt`),
centre-cropped and resized to 64. The label is one attribute, `Smiling` unless
`[datasets.faces] label = "..."` says otherwise; all attributes are kept for conditional models.
Without a test split, the last tenth of the training images (in a fixed shuffle) is held out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.datasets.readers import decode_images, first_file, inside, read_table, tree_fingerprint
from runner import DataContext, DataError, DatasetSpec, Split, hookimpl


def course_dir(ctx: DataContext) -> Path | None:
    for d in (ctx.root / "face", ctx.root / "faces"):
        if (d / "train.csv").is_file():
            return d
    return None


def celeba_dir(ctx: DataContext) -> Path | None:
    for d in (ctx.root / "celeba", ctx.root):
        if (d / "list_attr_celeba.txt").is_file() and (d / "img_align_celeba").is_dir():
            return d
    return None


def _finish(images: Any, attrs: Any, names: list[str], ctx: DataContext, where: Path) -> Split:

    label = ctx.option("label", "Smiling")
    if label not in names:
        have = ", ".join(names)
        raise DataError(f"{where}: no attribute column '{label}' (it has {have}); set [datasets.faces] label")
    return Split(images, attrs[:, names.index(label)].long(), attrs, tuple(names))


def read_course_split(folder: Path, table: Path, ctx: DataContext) -> Split | None:
    import torch

    if not table.is_file():
        return None
    rows = read_table(table, ctx, ["image_name"])
    names = [c for c in (rows[0].keys() if rows else []) if c != "image_name"]
    if rows and not names:
        ctx.problems.add(f"{table}: has only image_name; add one 0/1 column per attribute (such as Smiling)")
    paths, values = [], []
    for i, row in enumerate(rows, start=1):
        try:
            vals = [int(float(row[n])) for n in names]
        except ValueError:
            ctx.problems.add(f"{table}: row {i}: attribute values must be 0 or 1")
            continue
        if any(v not in (0, 1) for v in vals):
            ctx.problems.add(f"{table}: row {i}: attribute values must be 0 or 1, not {sorted(set(vals) - {0, 1})}")
            continue
        path = inside(folder, row["image_name"], table, ctx)
        if path is not None:
            paths.append(path)
            values.append(vals)
    if not paths:
        ctx.problems.add(f"{table}: no usable rows; an empty split cannot be learned from")
        return Split(torch.zeros((0, 3, 64, 64), dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    images, keep = decode_images(paths, ctx, 3, f"faces {folder.name}")
    attrs = torch.tensor(values, dtype=torch.uint8)[keep]
    return _finish(images, attrs, names, ctx, table)


def read_celeba(folder: Path, ctx: DataContext) -> dict[str, Split]:
    import torch

    attr_file = folder / "list_attr_celeba.txt"
    lines = attr_file.read_text().splitlines()
    if len(lines) < 3:
        raise DataError(f"{attr_file}: expected a count line, a line of attribute names, then one row per image")
    names = lines[1].split()
    rows = {}
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != len(names) + 1:
            ctx.problems.add(f"{attr_file}: line {n} has {len(parts) - 1} values for {len(names)} attributes")
            continue
        rows[parts[0]] = [1 if v == "1" else 0 for v in parts[1:]]
    partition_file = first_file(folder / "list_eval_partition.txt")
    parts = {}
    if partition_file:
        for line in partition_file.read_text().splitlines():
            bits = line.split()
            if len(bits) == 2:
                parts[bits[0]] = "test" if bits[1] == "2" else "train"
    limit = int(ctx.option("max_images", 0))
    out = {}
    for split in ("train", "test"):
        files = [f for f in rows if parts.get(f, "train") == split]
        if limit:
            files = files[:limit]
        if not files:
            continue
        paths = [folder / "img_align_celeba" / f for f in files]
        images, keep = decode_images(paths, ctx, 3, f"celeba {split}", size=64)
        attrs = torch.tensor([rows[f] for f in files], dtype=torch.uint8)[keep]
        out[split] = _finish(images, attrs, names, ctx, attr_file)
    return out


def build(ctx: DataContext) -> dict[str, Split]:
    folder = course_dir(ctx)
    if folder is not None:
        splits = {s: read_course_split(folder / s, folder / f"{s}.csv", ctx) for s in ("train", "test")}
    elif (celeb := celeba_dir(ctx)) is not None:
        splits = read_celeba(celeb, ctx)
    else:
        raise DataError(
            f"no face images under {ctx.root} (looked for face/train.csv and celeba/list_attr_celeba.txt); "
            "pass --data-root to the folder that holds them"
        )
    if splits.get("train") is None:
        raise DataError(f"{ctx.root}: the face data has no training split")
    if splits.get("test") is None:  # hold out a fixed tenth
        import torch

        train = splits["train"]
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        cut = max(1, len(train) // 10)
        splits = {"train": train.take(order[cut:]), "test": train.take(order[:cut])}
    return splits  # type: ignore[return-value]


def fingerprint(ctx: DataContext) -> str:
    folder = course_dir(ctx) or celeba_dir(ctx)
    tree = tree_fingerprint(folder) if folder else "missing"
    return f"{tree}|label={ctx.option('label', 'Smiling')}|max={ctx.option('max_images', 0)}"


def origin(ctx: DataContext) -> str:
    if (folder := course_dir(ctx)) is not None:
        return f"course folder {folder}"
    if (folder := celeba_dir(ctx)) is not None:
        return f"CelebA in {folder}"
    return f"not found under {ctx.root}"


FACES = DatasetSpec(
    name="faces",
    description="64x64 faces with binary attributes (course face folder or CelebA)",
    channels=3,
    size=64,
    classes=("no", "yes"),
    domain="faces",
    build=build,
    fingerprint=fingerprint,
    offline=lambda ctx: course_dir(ctx) is not None or celeba_dir(ctx) is not None,
    origin=origin,
    options={
        "label": ("Smiling", "the attribute used as the class label"),
        "max_images": (0, "read at most this many images per split (0: all); CelebA has 200,000"),
    },
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(FACES)
