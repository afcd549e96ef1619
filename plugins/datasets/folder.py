"""`folder` datasets: any image folder, named in registry.toml or given by path.

Named in registry.toml:

    [datasets.mydigits]
    folder = "~/data/mydigits"   # required: marks the table as a folder dataset
    channels = 3                 # optional (default 3)
    classes = ["0", "1", ...]    # optional (default: the class folders, or 0..max label)

or given by path anywhere a dataset name goes: `--pair ./mydigits:mnistm`.

Layouts: `train/` and `test/` holding either one subfolder per class, or images beside
`train.csv` / `test.csv` of image_name,label. A folder without train/ and test/ is one
class-per-subfolder tree whose images are split 80/20 in a fixed shuffle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.datasets.readers import IMAGE_SUFFIXES, read_class_folders, read_csv_split, read_table, tree_fingerprint
from runner import ConfigError, DataContext, DataError, DatasetSpec, Split, hookimpl
from runner.data import DatasetTables

KNOWN_KEYS = {"folder", "channels", "classes", "description"}


def _layout(folder: Path) -> str:
    if (folder / "train.csv").is_file():
        return "csv"
    if (folder / "train").is_dir():
        return "classes"
    return "tree"


def _classes(folder: Path) -> tuple[str, ...]:
    kind = _layout(folder)
    if kind == "csv":
        rows = read_table(folder / "train.csv", DataContext(folder, folder), ["image_name", "label"])
        labels = [r["label"] for r in rows]
        top = max((int(v) for v in labels if v.isdigit()), default=0)
        return tuple(str(i) for i in range(top + 1))
    base = folder / "train" if kind == "classes" else folder
    return tuple(sorted(p.name for p in base.iterdir() if p.is_dir())) if base.is_dir() else ()


def _first_image_size(folder: Path) -> int:
    from PIL import Image

    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(p) as im:
                return im.size[1]
    return 32


def folder_spec(name: str, folder: Path, channels: int = 3, classes: tuple[str, ...] | None = None) -> DatasetSpec:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise DataError(f"dataset '{name}': folder {folder} not found; fix its path")
    found = classes or _classes(folder)
    if not found:
        raise DataError(f"{folder}: no class subfolders or train.csv; see docs/datasets.md for the layouts")

    def build(ctx: DataContext) -> dict[str, Split]:
        kind = _layout(folder)
        if kind == "csv":
            return {
                s: read_csv_split(folder / s, folder / f"{s}.csv", ctx, channels, len(found), f"{name} {s}")
                for s in ("train", "test")
            }
        if kind == "classes":
            return {s: read_class_folders(folder / s, ctx, channels, found, f"{name} {s}") for s in ("train", "test")}
        import torch

        whole = read_class_folders(folder, ctx, channels, found, name)
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(0))
        cut = max(1, len(whole) // 5)
        return {"train": whole.take(order[cut:]), "test": whole.take(order[:cut])}

    return DatasetSpec(
        name=name,
        description=f"image folder {folder}",
        channels=channels,
        size=_first_image_size(folder),
        classes=found,
        domain="folder",
        build=build,
        fingerprint=lambda ctx: f"{tree_fingerprint(folder)}|c{channels}|{','.join(found)}",
        offline=lambda ctx: folder.is_dir(),
        origin=lambda ctx: f"folder {folder} ({_layout(folder)} layout)",
        options={k: (None, "folder dataset definition") for k in KNOWN_KEYS},
    )


@hookimpl
def hw3_register_datasets(register: Any, registry: DatasetTables) -> None:
    """The folder datasets registry.toml names (`[datasets.NAME]` with a `folder` key)."""
    for name, table in registry.datasets.items():
        if "folder" not in table:
            continue
        unknown = set(table) - KNOWN_KEYS
        if unknown:
            where = f"{registry.path or 'registry.toml'} [datasets.{name}]"
            keys = ", ".join(sorted(KNOWN_KEYS))
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for a folder dataset; use {keys}")
        classes = tuple(str(c) for c in table["classes"]) if "classes" in table else None
        register(folder_spec(name, Path(table["folder"]), int(table.get("channels", 3)), classes))


@hookimpl
def hw3_resolve_dataset(name: str) -> DatasetSpec | None:
    """A dataset given by path: any name with a '/' or starting with '~' that is a folder."""
    if "/" not in name and not name.startswith("~"):
        return None
    path = Path(name).expanduser()
    return folder_spec(name, path) if path.is_dir() else None
